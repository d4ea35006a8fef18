"""Inputs that used to end in a traceback or a misleading message: one line naming the file or option, status 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error

from bafenet.cli import main


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()



@pytest.fixture
def devkit_copy(synthetic_devkit, tmp_path) -> Path:
    return Path(shutil.copytree(synthetic_devkit, tmp_path / "SIRSTdevkit"))


def test_a_split_file_with_a_byte_order_mark_reads_and_a_latin1_byte_is_named(devkit_copy, tmp_path, capsys):
    split = devkit_copy / "Splits" / "test_v2.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())  # saved by an editor that adds a UTF-8 BOM
    assert main(["data", "build", "--devkit", str(devkit_copy), "--out", str(tmp_path / "ds"), "--split", "test",
                 "--no-stats"]) == 0
    split.write_bytes(split.read_bytes()[3:] + b"\ncaf\xe9")
    assert main(["data", "build", "--devkit", str(devkit_copy), "--out", str(tmp_path / "ds2"), "--split", "test",
                 "--no-stats"]) == 1
    one_line_error(capsys, str(split), "not UTF-8", "0xe9")


def test_data_stats_with_a_missing_split_exits_1(synthetic_devkit, tmp_path, capsys):
    assert main(["data", "stats", "--dataset", str(synthetic_devkit), "--split", "nosuch", "--out",
                 str(tmp_path / "stats"), "--no-plots"]) == 1
    one_line_error(capsys, "nosuch.txt", "unknown split")


def test_backbone_weights_that_are_not_weights_are_one_line(synthetic_dataset_dir, tmp_path, capsys):
    for name, content in (("notes.pth", b"hello world\n"), ("config.json.pth", b'{"a": 1}'),
                          ("empty.safetensors", b"")):
        weights = tmp_path / name
        weights.write_bytes(content)
        assert main(["train", "--dataset", str(synthetic_dataset_dir), "--backbone-weights", str(weights),
                     "--output-dir", str(tmp_path / "run"), "--report-to", "none"]) == 1, name
        one_line_error(capsys, f"--backbone-weights {weights}", "not a state dict of tensors")


def test_push_names_links_to_folders_for_what_they_are(tmp_path):
    from bafenet.hub import HubFolderError, collect_files

    folder = tmp_path / "model"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "a.txt").write_text("a")
    (folder / "alias").symlink_to(folder / "inner", target_is_directory=True)  # inside: its files go up once
    files, skipped = collect_files(folder)
    assert sorted(files) == ["inner/a.txt"] and "alias" in skipped
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(HubFolderError, match="outside the folder; replace it with a copy of the folder"):
        collect_files(folder)
    (folder / "out").unlink()
    (folder / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(HubFolderError, match="broken symbolic link"):
        collect_files(folder)


def test_predict_honours_the_exif_orientation(tmp_path):
    from bafenet.predict import load_grey_image

    pixels = np.zeros((20, 60), np.uint8)
    pixels[0, 0] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "camera.jpg", exif=exif, quality=100)
    loaded = load_grey_image(tmp_path / "camera.jpg")
    assert loaded.size == (20, 60)  # as viewers show it: portrait
    assert np.asarray(loaded)[0, -1] > 128  # the top-left pixel went to the top-right
