"""Point-level localisation against DenseSIRST's ``points`` labels (one (x, y) per target).

Coordinates are pixel-index (x = column, y = row, the centre of pixel ``c`` at ``c``), the labels' convention; the
labels are integer, about the floor of each target's centroid, so even a perfect detector shows an error of a few
tenths of a pixel. Use :func:`bafenet.metrics.render.box_centers` to turn XML-style boxes into such points.

Matching is **optimal** (not greedy): per image, a maximum number of one-to-one pairs with distance strictly below
``radius`` (the same strict ``< 3 px`` rule as Pd), and among those the smallest total distance, solved with
``scipy.optimize.linear_sum_assignment``. So the result does not depend on the order of points or labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._checks import align_by_image_id, check_points, safe_div

__all__ = ["match_points", "point_metrics"]


def match_points(predicted: Any, targets: Any, radius: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of (N, 2) predicted points to (M, 2) targets within ``radius`` (strict).

    Returns ``(pred_index, target_index, distance)`` of the matched pairs.
    """
    pred = check_points(predicted, "predicted points")
    gt = check_points(targets, "target points")
    empty = (np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0))
    if len(pred) == 0 or len(gt) == 0:
        return empty
    distance = np.linalg.norm(pred[:, None, :] - gt[None, :, :], axis=-1)
    valid = distance < radius
    if not valid.any():
        return empty
    # an invalid pair costs more than any sum of valid ones, so the assignment first maximises the number of valid
    # pairs and then minimises their total distance
    cost = np.where(valid, distance, radius * (min(len(pred), len(gt)) + 1))
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return rows[keep], cols[keep], distance[rows[keep], cols[keep]]


def point_metrics(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    radius: float = 3.0,
) -> dict[str, float | int]:
    """Point precision / recall / F1 and localisation error over a split.

    ``predictions`` and ``ground_truths``: one ``{"image_id", "points": (N, 2) (x, y)}`` per image on both sides.
    Keys: ``point_precision`` (matched / predicted), ``point_recall`` (matched / labelled), ``point_f1``,
    ``point_mean_error`` and ``point_median_error`` (pixels, over matched pairs; NaN when nothing matched),
    ``num_points_predicted``, ``num_points_labelled``, ``num_points_matched``, ``point_radius``.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    errors: list[np.ndarray] = []
    num_pred = num_gt = 0
    for image_id, pred, gt in align_by_image_id(predictions, ground_truths):
        pred_points = check_points(pred.get("points", ()), f"predictions[{image_id!r}]")
        gt_points = check_points(gt.get("points", ()), f"ground_truths[{image_id!r}]")
        num_pred += len(pred_points)
        num_gt += len(gt_points)
        errors.append(match_points(pred_points, gt_points, radius)[2])
    matched = np.concatenate(errors) if errors else np.zeros(0)
    precision = safe_div(len(matched), num_pred)
    recall = safe_div(len(matched), num_gt)
    return {
        "point_precision": precision,
        "point_recall": recall,
        "point_f1": safe_div(2 * precision * recall, precision + recall),
        "point_mean_error": float(matched.mean()) if len(matched) else float("nan"),
        "point_median_error": float(np.median(matched)) if len(matched) else float("nan"),
        "num_points_predicted": num_pred,
        "num_points_labelled": num_gt,
        "num_points_matched": int(len(matched)),
        "point_radius": float(radius),
    }
