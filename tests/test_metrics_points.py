"""Point localisation (optimal matching within a strict radius) and box rendering conventions."""

from __future__ import annotations

import numpy as np
import pytest

from bafenet.metrics.points import match_points, point_metrics
from bafenet.metrics.render import box_centers, boxes_to_mask


def pts(image_id, points):
    return {"image_id": image_id, "points": np.asarray(points, dtype=np.float32).reshape(-1, 2)}


def test_optimal_matching_beats_greedy_on_the_t3_layout():
    # greedy nearest-first would pair the first prediction with the second label and leave one unmatched
    pred = np.array([[12.0, 9.0], [8.0, 11.0]])
    labels = np.array([[10.0, 10.0], [14.0, 10.0]])
    rows, cols, dist = match_points(pred, labels)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    assert dist == pytest.approx([np.hypot(2, 1)] * 2)


def test_point_metrics_counts_and_errors():
    preds = [pts("a", [[10, 10], [50, 50], [21, 20]]), pts("b", [])]
    gts = [pts("a", [[10, 11], [20, 20]]), pts("b", [[5, 5]])]
    m = point_metrics(preds, gts)
    assert (m["num_points_predicted"], m["num_points_labelled"], m["num_points_matched"]) == (3, 3, 2)
    assert m["point_precision"] == pytest.approx(2 / 3) and m["point_recall"] == pytest.approx(2 / 3)
    assert m["point_f1"] == pytest.approx(2 / 3)
    assert m["point_mean_error"] == pytest.approx(1.0) and m["point_median_error"] == pytest.approx(1.0)


def test_radius_is_strict():
    assert point_metrics([pts("a", [[3, 0]])], [pts("a", [[0, 0]])])["num_points_matched"] == 0
    assert point_metrics([pts("a", [[2.9, 0]])], [pts("a", [[0, 0]])])["num_points_matched"] == 1


def test_nothing_predicted():
    m = point_metrics([pts("a", [])], [pts("a", [[1, 1]])])
    assert m["point_recall"] == 0.0 and m["point_precision"] == 0.0 and np.isnan(m["point_mean_error"])


def test_image_id_mismatch_and_bad_points_are_rejected():
    with pytest.raises(ValueError, match="image ids do not match"):
        point_metrics([pts("a", [])], [pts("b", [])])
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        point_metrics([{"image_id": "a", "points": [[1, 2, 3]]}], [pts("a", [])])


def test_box_centers_use_the_point_labels_pixel_index_convention():
    # XML box covering columns 203..205 and rows 36..39 (xmax/ymax exclusive)
    assert box_centers([[203, 36, 206, 40]])[0] == pytest.approx([204.0, 37.5])


def test_boxes_to_mask_renders_integer_xml_boxes_exactly():
    mask = boxes_to_mask([[2, 1, 5, 3]], height=6, width=8)
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 2:5] = True
    assert mask.dtype == bool and (mask == expected).all()


def test_boxes_to_mask_keeps_sub_pixel_boxes_and_clips():
    mask = boxes_to_mask([[3.1, 3.2, 3.4, 3.3], [-5, -5, 2, 2], [6.5, 4.5, 20, 20]], height=6, width=8)
    expected = np.zeros((6, 8), dtype=bool)
    expected[3, 3] = True  # thinner than a pixel: the pixel holding its centre
    expected[0:2, 0:2] = True  # clipped at the top-left
    expected[4:6, 6:8] = True  # pixel centres 6.5 and 4.5 lie on the (inclusive) left/top edges
    assert (mask == expected).all()
