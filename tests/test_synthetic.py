"""The synthetic devkit: real layout and file conventions, exact labels, byte-identical per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from bafenet.cli import main as cli_main
from bafenet.data.devkit import SirstDevkit
from bafenet.data.synthetic import write_synthetic_devkit
from bafenet.outputs import UserError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_devkits(tmp_path):
    a = _files(write_synthetic_devkit(tmp_path / "a", num_images=5, seed=3))
    b = _files(write_synthetic_devkit(tmp_path / "b", num_images=5, seed=3))
    c = _files(write_synthetic_devkit(tmp_path / "c", num_images=5, seed=4))
    assert a == b
    assert a.keys() == c.keys() and a["PNGImages/Misc_1.png"] != c["PNGImages/Misc_1.png"]


def test_layout_matches_the_real_devkit(synthetic_devkit):
    ids = SirstDevkit(synthetic_devkit).split_ids("trainval_v2") + SirstDevkit(synthetic_devkit).split_ids("test_v2")
    assert len(ids) == 12
    for image_id in ids:
        for rel in (
            f"PNGImages/{image_id}.png", f"SIRST/BBox/{image_id}.xml", f"SIRST/BinaryMask/{image_id}_pixels0.png",
            f"SIRST/BinaryMask/{image_id}.xml", f"SIRST/PaletteMask/{image_id}.png",
            f"SIRST/Point_label/{image_id}_pixels0.txt", f"SkySeg/BinaryMask/{image_id}_pixels0.png",
            f"SkySeg/BinaryMask/{image_id}.xml", f"SkySeg/PaletteMask/{image_id}.png",
        ):
            assert (synthetic_devkit / rel).is_file(), rel
    for split in ("train_v2", "val_v2", "test_v2", "trainval_v2", "train_v1", "val_v1", "test_v1", "trainval_v1"):
        text = (synthetic_devkit / "Splits" / f"{split}.txt").read_text()
        assert text and not text.endswith("\n")
    info = SirstDevkit(synthetic_devkit).synthetic_info()
    assert info == {"generator": "bafenet data synth", "num_images": 12, "seed": 0}
    modes = {Image.open(synthetic_devkit / "PNGImages" / f"{i}.png").mode for i in ids}
    assert modes == {"L", "RGB", "RGBA"}


def test_labels_are_exact(synthetic_devkit):
    """Box = extent of its mask component (exclusive max), point = floor of its centroid, targets in the sky."""
    devkit = SirstDevkit(synthetic_devkit)
    for image_id in devkit.split_ids("trainval_v2") + devkit.split_ids("test_v2"):
        sample = devkit.read(image_id)
        labels, n = ndimage.label(sample.target_mask, structure=np.ones((3, 3)))
        assert n == len(sample.boxes) >= 1
        extents, centroids = [], []
        for k, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
            extents.append([xs.start, ys.start, xs.stop, ys.stop])
            yy, xx = np.nonzero(labels == k)
            centroids.append([np.floor(xx.mean()), np.floor(yy.mean())])
        assert sorted(map(tuple, sample.boxes.tolist())) == sorted(map(tuple, np.array(extents, float).tolist()))
        assert sorted(map(tuple, sample.points.tolist())) == sorted(map(tuple, centroids))
        sizes = sample.boxes[:, 2:] - sample.boxes[:, :2]
        assert sizes.min() >= 2 and sizes.max() <= 6  # a few pixels, like DenseSIRST
        assert sample.sky_mask[sample.target_mask].all()


def test_palette_masks_equal_binary_masks(synthetic_devkit):
    for folder, colour in (("SIRST", (255, 0, 0)), ("SkySeg", (128, 0, 0))):
        palette = Image.open(synthetic_devkit / folder / "PaletteMask" / "Misc_1.png")
        binary = np.asarray(Image.open(synthetic_devkit / folder / "BinaryMask" / "Misc_1_pixels0.png"))
        assert palette.mode == "P" and tuple(palette.getpalette()[3:6]) == colour
        assert np.array_equal(np.asarray(palette) == 1, binary == 255)
        assert set(np.unique(binary).tolist()) <= {0, 255}


def test_refuses_to_overwrite_a_folder_that_is_not_a_devkit(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="was not written by bafenet"):
        write_synthetic_devkit(tmp_path, num_images=4)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="num_images must be >= 4"):
        write_synthetic_devkit(tmp_path / "x", num_images=3)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "SIRSTdevkit"
    assert cli_main(["data", "synth", "--out", str(out), "--num-images", "4", "--seed", "1"]) == 0
    assert "wrote a synthetic SIRSTdevkit" in capsys.readouterr().out
    assert len(list((out / "PNGImages").glob("*.png"))) == 4
    # an existing devkit is replaced, not mixed with the new one
    assert cli_main(["data", "synth", "--out", str(out), "--num-images", "5"]) == 0
    assert len(list((out / "PNGImages").glob("*.png"))) == 5
