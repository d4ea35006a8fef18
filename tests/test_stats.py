"""Dataset statistics: every number pinned on hand-made images whose targets were measured by hand.

Image ``hand_a`` (40 x 30 px, grey 10, sky = rows 0..14, a hot background pixel of 90 at x=38, y=28):

=====  =================  =====  ======================================  ==========================
name   box xyxy           grey   mask                                    centre (x, y)
=====  =================  =====  ======================================  ==========================
A      [5, 5, 8, 8]       40     8 px (pixel x=7, y=7 is not target)     (6.5, 6.5)
B      [20, 5, 22, 6]     30     2 px                                    (21, 5.5)
C      [24, 5, 25, 6]     100    1 px (inside B's ring, 2 px from B)     (24.5, 5.5)
D      [0, 26, 2, 28]     20     4 px (at the border, not in the sky)    (1, 27)
=====  =================  =====  ======================================  ==========================

Image ``hand_b`` (16 x 12 px RGB, grey 50 replicated, all sky): one target E [6, 4, 9, 7] of grey 60.

Ring = pixels 2..4 px beyond the box (gap 1, width 3), clipped to the image.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bafenet.data import stats as S

A_ID, B_ID = "hand_a", "hand_b"


def _hand_a() -> S.ImageAnnotations:
    image = np.full((30, 40), 10, np.uint8)
    target = np.zeros_like(image, bool)
    boxes = np.array([[5, 5, 8, 8], [20, 5, 22, 6], [24, 5, 25, 6], [0, 26, 2, 28]], np.float32)
    for (x0, y0, x1, y1), grey in zip(boxes.astype(int), (40, 30, 100, 20)):
        image[y0:y1, x0:x1] = grey
        target[y0:y1, x0:x1] = True
    image[7, 7], target[7, 7] = 10, False  # A: a box pixel that is not target
    image[28, 38] = 90  # hot background pixel
    sky = np.zeros_like(target)
    sky[:15] = True
    points = np.array([[6, 6], [20, 5], [24, 5], [0, 26]], np.float32)
    return S.ImageAnnotations(image, boxes, points, target, sky, image_id=A_ID)


def _hand_b() -> S.ImageAnnotations:
    image = np.full((12, 16), 50, np.uint8)
    target = np.zeros_like(image, bool)
    image[4:7, 6:9], target[4:7, 6:9] = 60, True
    return S.ImageAnnotations(image, np.array([[6, 4, 9, 7]], np.float32), np.array([[7, 5]], np.float32),
                              target, np.ones_like(target), image_id=B_ID)


# expected per target, in the order A, B, C, D, E
EXPECTED = {
    "w": [3, 2, 1, 2, 3],
    "h": [3, 1, 1, 2, 3],
    "box_area": [9, 2, 1, 4, 9],
    "mask_area": [8, 2, 1, 4, 9],
    "mean_intensity": [40, 30, 100, 20, 60],
    "peak_intensity": [40, 30, 100, 20, 60],
    "background_mean": [10, 10, 10, 10, 50],
    # B's ring (78 px) holds C (grey 100); C's ring (72 px) holds B's 2 px (grey 30); excluded in local_contrast
    "local_contrast": [4.0, 3.0, 10.0, 2.0, 1.2],
    "local_contrast_with_neighbours": [4.0, 30 / (870 / 78), 100 / (760 / 72), 2.0, 1.2],
    "local_contrast_cells": [4.0, 3.0, 10.0, 2.0, 1.2],
    # pixels strictly brighter than the peak: A: C + hot; B: A's 8 + C + hot; D: A + B's 2 + C + hot
    "brightness_rank": [3, 11, 1, 13, 1],
    "background_brighter": [1, 1, 0, 1, 0],
    "is_brightest": [0, 0, 1, 0, 1],
    "sky_overlap": [1, 1, 1, 0, 1],
    "nearest_target_distance": [math.hypot(14.5, 1), 3.5, 3.5, math.hypot(5.5, 20.5), math.nan],
    "cx": [6.5, 21, 24.5, 1, 7.5],
    "cy": [6.5, 5.5, 5.5, 27, 5.5],
}


def _dataset(samples, rgb_ids=()):
    """A `datasets.Dataset` with the pinned DenseSIRST columns, built from hand-made samples."""
    import datasets

    from bafenet.data.densesirst import FEATURES

    rows = {k: [] for k in FEATURES}
    for s in samples:
        boxes = np.asarray(s.boxes, np.float32)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        image = np.repeat(s.image[..., None], 3, -1) if s.image_id in rgb_ids else s.image
        rows["image"].append(image)
        rows["image_id"].append(len(rows["image_id"]))
        rows["image_name"].append(s.image_id)
        rows["width"].append(s.image.shape[1])
        rows["height"].append(s.image.shape[0])
        rows["objects"].append({"bbox": xywh.tolist(), "category": [0] * len(xywh),
                                "area": (xywh[:, 2] * xywh[:, 3]).tolist(), "id": list(range(len(xywh)))})
        rows["points"].append(np.asarray(s.points).tolist())
        rows["target_mask"].append(s.target_mask.astype(np.uint8) * 255)
        rows["sky_mask"].append(s.sky_mask.astype(np.uint8) * 255)
    return datasets.Dataset.from_dict(rows, features=FEATURES)


@pytest.fixture(scope="module")
def hand_stats() -> S.DatasetStats:
    return S.compute_target_stats([_hand_a(), _hand_b()], progress=False, num_workers=1)


@pytest.mark.parametrize("column", sorted(EXPECTED))
def test_per_target_values_match_hand_measurements(hand_stats, column):
    np.testing.assert_allclose(hand_stats.targets[column], EXPECTED[column], rtol=1e-9, equal_nan=True)


def test_per_image_values(hand_stats):
    im = hand_stats.images
    assert list(im["image_id"]) == [A_ID, B_ID]
    assert list(im["num_targets"]) == [4, 1] and list(im["num_points"]) == [4, 1]
    np.testing.assert_allclose(im["sky_fraction"], [0.5, 1.0])
    np.testing.assert_allclose(im["target_fraction"], [15 / 1200, 9 / 192])
    assert list(im["max_intensity"]) == [100, 60]


def test_summary_and_claims(hand_stats):
    s = hand_stats.summary()
    assert (s["num_images"], s["num_targets"]) == (2, 5)
    assert s["size"]["most_common_wxh"][0] == {"w": 3, "h": 3, "count": 2, "share": 0.4}
    assert s["size"]["share_below_5x5"] == 1.0
    assert s["size"]["mask_area_px"]["mean"] == pytest.approx(24 / 5)
    assert s["contrast"]["local_contrast"]["share_below_2"] == pytest.approx(0.2)  # only E (1.2); D is exactly 2
    assert s["brightness"]["share_brightest"] == pytest.approx(0.4)
    assert s["brightness"]["images_whose_brightest_point_is_a_target"] == 2
    assert s["targets_per_image"]["mean"] == 2.5
    assert s["nearest_target_distance_px"]["median"] == pytest.approx((3.5 + math.hypot(14.5, 1)) / 2)
    assert s["nearest_target_distance_px"]["single_target_images"] == 1
    assert s["sky"]["share_targets_in_sky"] == pytest.approx(0.8)
    assert (s["sky"]["images_all_sky"], s["sky"]["images_without_sky"]) == (1, 0)
    verdicts = {c["claim"]: c["verdict"] for c in hand_stats.claims(s)}
    assert verdicts[S.README_CLAIMS["mode"]] == "yes"
    assert verdicts[S.README_CLAIMS["brightest"]] == "yes"  # 40 % < 50 %
    assert verdicts[S.README_CLAIMS["contrast"]] == "no"


def test_chunked_measurement_gives_the_same_numbers(hand_stats, monkeypatch):
    monkeypatch.setattr(S.measure, "_MAX_CHUNK_PIXELS", 1)  # one target per chunk
    stats = S.compute_target_stats([_hand_a(), _hand_b()], progress=False, num_workers=1)
    for column in EXPECTED:
        np.testing.assert_array_equal(stats.targets[column], hand_stats.targets[column])


def test_ring_width_and_gap_change_the_contrast():
    # gap 0, width 1: B's ring is the 1-px frame around it (x 19..22, y 4..6 minus the box) and holds no other target
    stats = S.compute_target_stats([_hand_a()], ring_gap=0, ring_width=1, progress=False, num_workers=1)
    np.testing.assert_allclose(stats.targets["local_contrast_with_neighbours"], [4.0, 3.0, 10.0, 2.0])
    with pytest.raises(S.StatsError, match="ring_width"):
        S.compute_target_stats([_hand_a()], ring_width=0, progress=False)


def test_dataset_rows_give_the_same_numbers_with_rgb_images_and_duplicates(hand_stats):
    import datasets

    ds = _dataset([_hand_a(), _hand_b()], rgb_ids=(B_ID,))
    both = datasets.DatasetDict({"train": ds, "test": ds.select([1])})  # hand_b twice: counted once
    stats = S.compute_target_stats(both, progress=False, num_workers=2)
    assert stats.duplicates == 1 and stats.splits == ["train"]
    for column in EXPECTED:
        np.testing.assert_allclose(stats.targets[column], hand_stats.targets[column], equal_nan=True)


def test_bad_input_names_the_image():
    bad = _hand_b()
    bad.boxes = np.array([[10, 4, 17, 7]], np.float32)  # x2 = 17 > width 16
    with pytest.raises(S.StatsError, match=r"hand_b: box 0 .* outside the 16x12 image"):
        S.measure_image(bad)
    bad = _hand_b()
    bad.sky_mask = bad.sky_mask[:5]
    with pytest.raises(S.StatsError, match="hand_b: sky_mask has shape"):
        S.measure_image(bad)
    import datasets

    with pytest.raises(S.StatsError, match="lacks the column"):
        S.compute_target_stats(datasets.Dataset.from_dict({"image_id": ["x"]}), progress=False)


@pytest.mark.slow  # draws every plot (seconds)
def test_write_card_stats_files_and_relative_links(tmp_path):
    import datasets

    ds = datasets.DatasetDict({"train": _dataset([_hand_a()]), "test": _dataset([_hand_b()])})
    markdown = S.write_card_stats(ds, tmp_path)
    stats_dir = tmp_path / "stats"
    for name in ("summary.json", "targets.csv", "images.csv", "README.md", "sizes.png", "contrast_cdf.png",
                 "brightness_rank.png", "cluster_distance.png", "per_image.png", "examples.png"):
        assert (stats_dir / name).is_file(), name
    for name in ("sizes", "contrast_cdf", "brightness_rank", "cluster_distance", "per_image", "examples"):
        assert (stats_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](stats/{name}.png)" in markdown
    assert markdown.startswith("## Dataset statistics")
    assert "| claim (DenseSIRST README) | measured here | holds? |" in markdown
    assert S.CARD_COMMAND in markdown
    summary = json.loads((stats_dir / "summary.json").read_text())
    assert summary["num_targets"] == 5 and summary["images_per_split"] == {"train": 1, "test": 1}
    assert len(summary["claims"]) == len(S.README_CLAIMS)
    lines = (stats_dir / "targets.csv").read_text().splitlines()
    assert lines[0].split(",") == list(S.TARGET_COLUMNS) and len(lines) == 6
    assert lines[-1].split(",")[-1] == ""  # E has no other target: empty, not "nan"


def test_cli_on_synthetic_devkit_agrees_with_the_built_dataset(
    synthetic_devkit, synthetic_dataset_dir, tmp_path, capsys
):
    import csv

    from bafenet.cli import main

    out = tmp_path / "devkit_stats"
    assert main(["data", "stats", "--dataset", str(synthetic_devkit), "--split", "test_v2", "--no-plots",
                 "--out", str(out)]) == 0
    assert "The DenseSIRST README's claims" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "targets.csv").open()))
    from_dataset = S.compute_target_stats(S.load_source(synthetic_dataset_dir, splits=["test"]), progress=False)
    assert len(rows) == from_dataset.num_targets > 0
    assert [r["image_id"] for r in rows] == list(from_dataset.targets["image_id"])
    for column in ("w", "h", "mask_area", "local_contrast", "local_contrast_cells", "brightness_rank",
                   "nearest_target_distance", "sky_overlap"):
        from_csv = [float(r[column]) if r[column] else math.nan for r in rows]
        np.testing.assert_allclose(from_csv, from_dataset.targets[column], rtol=1e-4, equal_nan=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == from_dataset.num_images and summary["images_per_split"] == {"test_v2": 3}
    assert not list(out.glob("*.png"))


def test_built_dataset_card_embeds_the_statistics(synthetic_dataset_dir):
    card = (synthetic_dataset_dir / "README.md").read_text()
    assert "The DenseSIRST README's claims, checked" in card
    for link in ("stats/sizes.png", "stats/examples.png", "stats/summary.json"):
        assert f"]({link})" in card and (synthetic_dataset_dir / link).is_file()


@pytest.mark.slow  # measures 64 real images
@pytest.mark.real_data
def test_readme_claims_on_real_test_split(real_devkit):
    """Size and brightness claims on 64 real test_v2 images (the full numbers are in the README section 'stats')."""
    from bafenet.data.devkit import SirstDevkit

    ids = SirstDevkit(real_devkit).split_ids("test_v2")[:64]
    stats = S.compute_target_stats(S.iter_devkit(real_devkit, ids), progress=False)
    s = stats.summary()
    assert s["size"]["most_common_wxh"][0]["w"] == s["size"]["most_common_wxh"][0]["h"] == 3
    assert s["size"]["share_below_5x5"] > 0.5
    assert s["brightness"]["share_brightest"] < 0.5
    assert s["contrast"]["local_contrast_cells"]["share_below_2"] > s["contrast"]["local_contrast"]["share_below_2"]
