"""The SIRSTdevkit reader: conventions of the real files, and one clear DevkitError per kind of bad input."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bafenet.data.devkit import DevkitError, DevkitSample, SirstDevkit


def xml_boxes(path: Path) -> np.ndarray:
    root = ET.parse(path).getroot()
    tags = ("xmin", "ymin", "xmax", "ymax")
    return np.array([[float(o.findtext(f"bndbox/{t}")) for t in tags] for o in root.iter("object")]).reshape(-1, 4)


@pytest.fixture
def devkit_copy(synthetic_devkit, tmp_path) -> Path:
    """A private copy of the synthetic devkit that a test may corrupt."""
    return Path(shutil.copytree(synthetic_devkit, tmp_path / "SIRSTdevkit"))


def test_read_returns_all_label_types_in_devkit_conventions(synthetic_devkit):
    devkit = SirstDevkit(synthetic_devkit)
    for image_id in devkit.split_ids("trainval_v2") + devkit.split_ids("test_v2"):
        sample = devkit.read(image_id)
        assert isinstance(sample, DevkitSample)
        assert sample.image.dtype == np.uint8 and sample.image.shape == (sample.height, sample.width)
        assert sample.target_mask.shape == sample.sky_mask.shape == sample.image.shape
        assert sample.target_mask.dtype == sample.sky_mask.dtype == bool
        assert sample.boxes.dtype == np.float32 and np.array_equal(sample.boxes, xml_boxes(devkit.bbox_path(image_id)))
        assert sample.points.shape == (len(sample.boxes), 2)
        # exclusive max: the box covers exactly the mask pixels of the target
        for x1, y1, x2, y2 in sample.boxes.astype(int):
            assert sample.target_mask[y1:y2, x1:x2].any()
            ring = sample.target_mask[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1]
            assert sample.target_mask[y1:y2, x1:x2].sum() == ring.sum()  # no target pixel just outside


def test_colour_pngs_are_converted_to_grey(synthetic_devkit):
    devkit = SirstDevkit(synthetic_devkit)
    modes = {i: Image.open(devkit.image_path(i)).mode for i in ("Misc_2", "Misc_3")}
    assert modes == {"Misc_2": "RGB", "Misc_3": "RGBA"}
    for image_id in modes:
        sample = devkit.read(image_id)
        expected = np.asarray(Image.open(devkit.image_path(image_id)).convert("L"))
        assert sample.image.ndim == 2 and np.array_equal(sample.image, expected)


def test_read_encoded_keeps_original_png_bytes(synthetic_devkit):
    devkit = SirstDevkit(synthetic_devkit)
    encoded = devkit.read_encoded("Misc_1")
    assert encoded.image_png == devkit.image_path("Misc_1").read_bytes()
    assert encoded.target_mask_png == devkit.target_mask_path("Misc_1").read_bytes()  # already L {0, 255}


def test_mask_in_other_encoding_is_reencoded_as_L_0_255(devkit_copy):
    devkit = SirstDevkit(devkit_copy)
    expected = devkit.read("Misc_1").target_mask
    Image.fromarray(expected).save(devkit.target_mask_path("Misc_1"))  # bilevel mode "1" ({0, 1} in L is refused)
    encoded = devkit.read_encoded("Misc_1")
    mask = Image.open(__import__("io").BytesIO(encoded.target_mask_png))
    assert mask.mode == "L" and set(np.unique(mask).tolist()) <= {0, 255}
    assert np.array_equal(np.asarray(mask) > 0, expected)


def test_split_files(synthetic_devkit):
    devkit = SirstDevkit(synthetic_devkit)
    assert {"train_v2", "val_v2", "test_v2", "trainval_v2", "train_v1", "val_v1", "test_v1", "trainval_v1"} <= set(
        devkit.split_names()
    )
    train, val, test = (devkit.split_ids(s) for s in ("train_v2", "val_v2", "test_v2"))
    assert devkit.split_ids("trainval_v2") == train + val and not set(train + val) & set(test)
    assert all(i.startswith("Misc_") for i in devkit.split_ids("trainval_v1") + devkit.split_ids("test_v1"))
    assert not (synthetic_devkit / "Splits" / "test_v2.txt").read_bytes().endswith(b"\n")  # like the real files


def test_split_file_with_trailing_newline_or_crlf_reads_the_same(devkit_copy):
    path = devkit_copy / "Splits" / "test_v2.txt"
    ids = SirstDevkit(devkit_copy).split_ids("test_v2")
    path.write_bytes(("\r\n".join(ids) + "\r\n").encode())
    assert SirstDevkit(devkit_copy).split_ids("test_v2") == ids


# ---------------------------------------------------------------------------------------------------- bad input
def _corrupt_png(devkit: SirstDevkit) -> Path:
    path = devkit.image_path("Misc_1")
    data = bytearray(path.read_bytes())
    data[60:200] = bytes(140)  # zero the start of the IDAT chunk
    path.write_bytes(bytes(data))
    return path


def _truncate_png(devkit: SirstDevkit) -> Path:
    path = devkit.image_path("Misc_1")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


def _remove(path: Path) -> Path:
    path.unlink()
    return path


def _edit_box(devkit: SirstDevkit, tag: str, value: int) -> Path:
    path = devkit.bbox_path("Misc_1")
    tree = ET.parse(path)
    tree.getroot().find(f"object/bndbox/{tag}").text = str(value)
    tree.write(path)
    return path


def _resize_mask(devkit: SirstDevkit) -> Path:
    path = devkit.sky_mask_path("Misc_1")
    Image.open(path).resize((17, 13)).save(path)
    return path


def _drop_point(devkit: SirstDevkit) -> Path:
    path = devkit.points_path("Misc_1")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))
    return path


def _point_outside(devkit: SirstDevkit) -> Path:
    path = devkit.points_path("Misc_1")
    path.write_text("5000 1\n" * len(path.read_text().splitlines()))
    return path


def _xml_size(devkit: SirstDevkit) -> Path:
    path = devkit.bbox_path("Misc_1")
    path.write_text(path.read_text().replace("<width>", "<width>9"))
    return path


BAD_FILES = {
    "corrupt png": (_corrupt_png, "corrupt or truncated PNG"),
    "truncated png": (_truncate_png, "corrupt or truncated PNG"),
    "missing xml": (lambda d: _remove(d.bbox_path("Misc_1")), "missing box annotation XML"),
    "missing target mask": (lambda d: _remove(d.target_mask_path("Misc_1")), "missing target mask"),
    "missing sky mask": (lambda d: _remove(d.sky_mask_path("Misc_1")), "missing sky mask"),
    "missing points": (lambda d: _remove(d.points_path("Misc_1")), "missing point label file"),
    "box outside image": (lambda d: _edit_box(d, "xmax", 10_000), "lies outside the"),
    "negative box": (lambda d: _edit_box(d, "ymin", -3), "lies outside the"),
    "x2 <= x1": (lambda d: _edit_box(d, "xmax", 0), "x2 <= x1"),
    "mask size differs": (_resize_mask, "is 17x13 but its image is"),
    "point count differs": (_drop_point, "point lines but Misc_1.xml has"),
    "point outside image": (_point_outside, r"point \(5000, 1\) lies outside"),
    "xml size differs": (_xml_size, "<size> says 9"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_one_clear_error(devkit_copy, case):
    devkit = SirstDevkit(devkit_copy)
    damage, message = BAD_FILES[case]
    path = damage(devkit)
    with pytest.raises(DevkitError, match=message) as info:
        devkit.read("Misc_1")
    assert str(path) in str(info.value)
    with pytest.raises(DevkitError, match=message):
        devkit.read_encoded("Misc_1")


def test_empty_split_raises(devkit_copy):
    (devkit_copy / "Splits" / "test_v2.txt").write_text("")
    with pytest.raises(DevkitError, match=r"test_v2.txt: split 'test_v2' is empty"):
        SirstDevkit(devkit_copy).split_ids("test_v2")


def test_unknown_split_names_the_available_ones(synthetic_devkit):
    with pytest.raises(DevkitError, match=r"unknown split 'test_v3'; available: .*test_v2"):
        SirstDevkit(synthetic_devkit).split_ids("test_v3")


def test_duplicate_or_blank_split_lines_raise(devkit_copy):
    (devkit_copy / "Splits" / "test_v2.txt").write_text("Misc_1\nMisc_1")
    with pytest.raises(DevkitError, match="listed twice"):
        SirstDevkit(devkit_copy).split_ids("test_v2")
    (devkit_copy / "Splits" / "test_v2.txt").write_text("Misc_1\n\nMisc_2")
    with pytest.raises(DevkitError, match="line 2 is blank"):
        SirstDevkit(devkit_copy).split_ids("test_v2")


def test_devkit_path_errors(tmp_path):
    with pytest.raises(DevkitError, match="devkit folder does not exist") as info:
        SirstDevkit(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    (tmp_path / "repo" / "data" / "SIRSTdevkit").mkdir(parents=True)
    with pytest.raises(DevkitError, match=r"not a SIRSTdevkit, missing sub-folders PNGImages.*did you mean"):
        SirstDevkit(tmp_path / "repo")


@pytest.mark.real_data
def test_real_devkit_misc_1(real_devkit):
    """The verbatim example of the technical report (Misc_1: 320x240, 9 targets, 82 target px, 50,855 sky px)."""
    sample = SirstDevkit(real_devkit).read("Misc_1")
    assert (sample.width, sample.height) == (320, 240)
    assert sample.boxes[0].tolist() == [203, 36, 206, 40] and len(sample.boxes) == 9
    assert sample.points[0].tolist() == [220, 133] and len(sample.points) == 9
    assert sample.target_mask.sum() == 82 and sample.sky_mask.sum() == 50_855
    # exclusive max: the first box covers x 203..205 and y 36..39
    assert sample.target_mask[36:40, 203:206].any() and not sample.target_mask[36:40, 206].any()
