"""Resize, flip and BAG-CP keep image, boxes, points and masks consistent."""

from __future__ import annotations

import numpy as np
import pytest

from bafenet.data.transforms import (
    BagCopyPaste,
    DetectionSample,
    TrainTransform,
    hflip,
    resize,
    resize_bilinear,
    sample_from_row,
    to_coco_annotation,
)


def make_sample(seed: int = 0, height: int = 96, width: int = 128, sky_rows: int = 60, n_targets: int = 6):
    """A grey image whose top ``sky_rows`` rows are sky, with small bright square targets (some on the sky)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(10, 60, size=(height, width)).astype(np.uint8)
    target = np.zeros((height, width), bool)
    boxes, points = [], []
    for _ in range(n_targets):
        h, w = (int(v) for v in rng.integers(1, 6, size=2))
        if rng.random() < 0.3:  # a large one, shrunk by BAG-CP
            h, w = 12, 11
        row, col = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        if target[max(row - 1, 0) : row + h + 1, max(col - 1, 0) : col + w + 1].any():
            continue
        target[row : row + h, col : col + w] = True
        image[row : row + h, col : col + w] = 200
        boxes.append([col, row, col + w, row + h])
        points.append([col + w // 2, row + h // 2])
    sky = np.zeros((height, width), bool)
    sky[:sky_rows] = True
    return DetectionSample(image, np.array(boxes), np.array(points), target, sky, image_id=f"synthetic_{seed}")


def assert_labels_match_masks(sample: DetectionSample) -> None:
    for (x1, y1, x2, y2), (px, py) in zip(sample.boxes.astype(int), sample.points.astype(int), strict=True):
        assert sample.target_mask[y1:y2, x1:x2].all()
        assert x1 <= px < x2 and y1 <= py < y2


def test_hflip_moves_boxes_points_and_masks_together():
    sample = make_sample()
    flipped = hflip(sample)
    assert_labels_match_masks(flipped)
    np.testing.assert_array_equal(flipped.image, sample.image[:, ::-1])
    back = hflip(flipped)
    np.testing.assert_array_equal(back.boxes, sample.boxes)
    np.testing.assert_array_equal(back.points, sample.points)
    np.testing.assert_array_equal(back.sky_mask, sample.sky_mask)


def test_resize_scales_labels_with_the_pixels():
    sample = make_sample()
    out = resize(sample, 192, 256)  # exactly x2: every label stays on its pixels
    assert out.image.shape == out.target_mask.shape == out.sky_mask.shape == (192, 256)
    np.testing.assert_array_equal(out.boxes, sample.boxes * 2)
    assert_labels_match_masks(out)
    assert out.original_size == (96, 128)
    np.testing.assert_array_equal(out.sky_mask[:120], True)
    np.testing.assert_array_equal(out.sky_mask[120:], False)


def test_resize_bilinear_matches_half_pixel_convention():
    image = np.array([[0, 100], [100, 200]], np.uint8)
    out = resize_bilinear(image, 4, 4)
    assert out[0, 0] == 0 and out[-1, -1] == 200
    np.testing.assert_array_equal(out, out.T)
    assert resize_bilinear(image, 2, 2) is not image


@pytest.mark.parametrize("size", [(37, 53), (140, 90), (90, 130), (180, 260)])
def test_numpy_and_torch_bilinear_resizes_agree(size):
    """The training pipeline's numpy resize and the model's torch resampling (processor and zoom windows) are two
    copies of one sampling rule: the same source pixels and weights, the same image up to the numpy rounding."""
    import torch
    import torch.nn.functional as F

    from bafenet.data.transforms import _source_coordinates
    from bafenet.models.bafenet.tiling_bafenet import resample_axis, scaled_window

    image = np.random.default_rng(size[0]).integers(0, 256, (90, 130), dtype=np.uint8)
    height, width = size
    for out, length in ((height, 90), (width, 130)):
        low, high, weight = _source_coordinates(out, length)
        t_low, t_high, t_weight = resample_axis(0, out, out, length, torch.device("cpu"))
        assert np.array_equal(low, t_low.numpy()) and np.array_equal(high, t_high.numpy())
        moving = low != high  # at the clamped edge both read one pixel, whatever the weight
        assert np.abs(weight - t_weight.numpy())[moving].max() < 1e-4
    ours = resize_bilinear(image, height, width).astype(np.float64)
    pixels = torch.tensor(image, dtype=torch.float32)[None]
    interpolated = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    padded = F.pad(pixels, (0, 1, 0, 1))  # scaled_window reads one padding row and column past the image
    window = scaled_window(padded, (90, 130), size, 0, 0, max(size))[0, :height, :width].numpy()
    for theirs in (interpolated, window):  # numpy rounds to uint8; torch's float32 coordinates differ by < 2e-3
        assert np.abs(ours - theirs).max() <= 0.5 + 2e-3


@pytest.mark.parametrize("seed", range(25))
def test_bag_cp_pastes_only_on_free_sky_and_labels_match_pixels(seed):
    dst, src = make_sample(seed), make_sample(seed + 1000, n_targets=12)
    rng = np.random.default_rng(seed)
    out = BagCopyPaste(window=15)(dst, src, rng)
    n_old = len(dst.boxes)
    np.testing.assert_array_equal(out.boxes[:n_old], dst.boxes)
    np.testing.assert_array_equal(out.points[:n_old], dst.points)
    np.testing.assert_array_equal(out.sky_mask, dst.sky_mask)
    new_boxes, new_points = out.boxes[n_old:].astype(int), out.points[n_old:].astype(int)
    assert len(new_boxes) == len(new_points) <= len(src.boxes)

    pasted = np.zeros_like(dst.target_mask)
    near_old = np.zeros_like(dst.target_mask)
    for x1, y1, x2, y2 in dst.boxes.astype(int):
        near_old[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = True
    for (x1, y1, x2, y2), (px, py) in zip(new_boxes, new_points, strict=True):
        assert 1 <= x2 - x1 <= 9 and 1 <= y2 - y1 <= 9  # source size, large ones shrunk to 7x7
        assert dst.sky_mask[y1:y2, x1:x2].all(), "paste left the sky"
        assert not near_old[y1:y2, x1:x2].any(), "paste touches an existing target"
        assert not pasted[y1:y2, x1:x2].any(), "two pastes overlap"
        assert x1 <= px < x2 and y1 <= py < y2, "point outside its box"
        pasted[y1:y2, x1:x2] = True

    changed = out.image != dst.image
    assert not (changed & ~pasted).any(), "pixels changed outside the pasted boxes"
    assert (out.image >= dst.image).all(), "the Gaussian paste is additive"
    np.testing.assert_array_equal(out.target_mask, dst.target_mask | pasted)


def test_bag_cp_pastes_in_clusters_and_is_deterministic():
    dst, src = make_sample(1, sky_rows=96, n_targets=0), make_sample(2, n_targets=30)
    counts = []
    for seed in range(10):
        a = BagCopyPaste()(dst, src, np.random.default_rng(seed))
        b = BagCopyPaste()(dst, src, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        counts.append(len(a.boxes))
        if len(a.boxes) >= 5:  # the first cluster of 5 shares one 25x25 window
            first = a.boxes[:5]
            assert first[:, 2].max() - first[:, 0].min() <= 25 and first[:, 3].max() - first[:, 1].min() <= 25
    assert max(counts) > 5 and min(counts) < max(counts)


def test_bag_cp_leaves_images_without_sky_or_by_probability_unchanged():
    src = make_sample(3)
    no_sky = make_sample(4, sky_rows=0)
    assert BagCopyPaste()(no_sky, src, np.random.default_rng(0)) is no_sky
    dst = make_sample(5)
    assert BagCopyPaste(probability=0.0)(dst, src, np.random.default_rng(0)) is dst


def test_bag_cp_rejects_bad_parameters():
    with pytest.raises(ValueError, match="probability"):
        BagCopyPaste(probability=1.5)
    with pytest.raises(ValueError, match="sigma_range"):
        BagCopyPaste(sigma_range=(0.6, 0.3))
    with pytest.raises(ValueError, match="window"):
        BagCopyPaste(window=0)


def test_train_transform_outputs_model_size_with_consistent_labels():
    transform = TrainTransform(size=(64, 80), flip_probability=0.5)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out = transform(make_sample(seed), make_sample(seed + 1), rng)
        assert out.image.shape == (64, 80)
        assert (out.boxes[:, 2:] > out.boxes[:, :2]).all()
        assert (out.points >= 0).all() and (out.points[:, 0] < 80).all() and (out.points[:, 1] < 64).all()


def test_sample_errors_name_the_image():
    with pytest.raises(ValueError, match="'bad'.*sky_mask"):
        DetectionSample(np.zeros((4, 4), np.uint8), np.zeros((0, 4)), np.zeros((0, 2)), np.zeros((4, 4)),
                        np.zeros((3, 4)), image_id="bad")


def test_coco_annotation_round_trip():
    sample = make_sample()
    annotation = to_coco_annotation(sample, image_id=7)
    assert annotation["image_id"] == 7 and len(annotation["annotations"]) == len(sample.boxes)
    x, y, w, h = annotation["annotations"][0]["bbox"]
    np.testing.assert_allclose([x, y, x + w, y + h], sample.boxes[0])


def test_sample_from_dataset_row(synthetic_dataset_dir):
    import datasets

    row = datasets.load_dataset(str(synthetic_dataset_dir), split="train")[0]
    sample = sample_from_row(row)
    assert sample.image.shape == sample.sky_mask.shape == (row["height"], row["width"])
    assert len(sample.boxes) == len(row["objects"]["bbox"]) == len(sample.points)
    for x1, y1, x2, y2 in sample.boxes.astype(int):
        assert sample.target_mask[y1:y2, x1:x2].any()


def _mean_sizes_real_and_pasted(rows, size: int = 512, passes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean (w, h) of the dataset's boxes resized to ``size``² and of BAG-CP's pastes of them on an all-sky canvas.

    Boxes whose resized side could reach ``large_object_size`` are left out: those are shrunk to 7x7 by design.
    """
    copy_paste = BagCopyPaste()
    limit = copy_paste.large_object_size - 2  # truncation adds at most 1 px to a side
    sources = []
    for row in rows:
        sample = resize(sample_from_row(row), size, size)
        sides = sample.boxes[:, 2:] - sample.boxes[:, :2]
        sources.append(DetectionSample(sample.image, sample.boxes[(sides < limit).all(axis=1)], np.zeros((0, 2)),
                                       sample.target_mask, sample.sky_mask))
    canvas = DetectionSample(np.zeros((size, size), np.uint8), np.zeros((0, 4)), np.zeros((0, 2)),
                             np.zeros((size, size), bool), np.ones((size, size), bool))
    real = np.concatenate([s.boxes for s in sources])
    rng = np.random.default_rng(0)
    pasted = np.concatenate([copy_paste(canvas, s, rng).boxes for _ in range(passes) for s in sources])
    assert len(pasted) > 300, "too few pastes for a 0.2 px comparison"
    return (real[:, 2:] - real[:, :2]).mean(axis=0), (pasted[:, 2:] - pasted[:, :2]).mean(axis=0)


def test_bag_cp_crop_truncates_both_ends_like_the_original():
    crop = BagCopyPaste.crop_extent
    assert crop(np.array([10.7, 3.2, 14.1, 7.9]), 64, 64) == (10, 3, 14, 7)  # int() on both ends, as the original
    assert crop(np.array([10.2, 3.0, 10.6, 3.5]), 64, 64) == (10, 3, 11, 4)  # at least one pixel
    assert crop(np.array([62.5, 62.5, 64.0, 64.0]), 64, 64) == (62, 62, 64, 64)  # inside the image


def test_bag_cp_pastes_targets_of_the_real_size_on_the_synthetic_devkit(synthetic_dataset_dir):
    import datasets

    rows = datasets.load_dataset(str(synthetic_dataset_dir), "default", split="train")
    real, pasted = _mean_sizes_real_and_pasted(rows, passes=40)
    np.testing.assert_allclose(pasted, real, atol=0.2)


@pytest.mark.slow  # reads the real devkit (seconds)
@pytest.mark.real_data
def test_bag_cp_pastes_targets_of_the_real_size_on_the_real_devkit(real_devkit, tmp_path):
    """Measured at 512²: real 3.52 x 4.43 px; pasted 4.41 x 4.86 before the fix (floor..ceil), 3.50 x 4.40 after."""
    import datasets

    from bafenet.data.build import build_dataset

    built = build_dataset(real_devkit, tmp_path / "densesirst", skip_missing=True, configs=["default"],
                          splits=["train"], stats=False)
    rows = datasets.load_dataset(str(built), "default", split="train")
    real, pasted = _mean_sizes_real_and_pasted(rows)
    np.testing.assert_allclose(pasted, real, atol=0.2)
