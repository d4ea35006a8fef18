"""Input contracts shared by the metric modules: convert, check, and fail with a message naming the input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """Return ``value`` (numpy array, torch tensor, list) as a numpy array without copying when possible."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _finite_rows(value: Any, width: int, what: str, layout: str, where: str) -> np.ndarray:
    """``value`` as a float64 (N, width) array of finite numbers ((0, width) when empty), else a ValueError."""
    array = to_numpy(value).astype(np.float64, copy=False)
    if array.size == 0:
        return np.zeros((0, width), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{where}: {what} must have shape (N, {width}) {layout}, got shape {array.shape}")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"{where}: {what} row {row} has a non-finite value: {array[row].tolist()}")
    return array


def check_boxes(boxes: Any, where: str) -> np.ndarray:
    """Validate (N, 4) xyxy boxes: finite, ``x2 >= x1`` and ``y2 >= y1``. Returns float64 (N, 4)."""
    array = _finite_rows(boxes, 4, "boxes", "in xyxy order", where)
    bad = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}: box {row} = {array[row].tolist()} has x2 < x1 or y2 < y1; boxes must be xyxy "
            "(x_min, y_min, x_max, y_max), not xywh"
        )
    return array


def check_scores(scores: Any, num_boxes: int, where: str) -> np.ndarray:
    """Validate (N,) finite scores matching ``num_boxes``. Returns float64 (N,)."""
    array = to_numpy(scores).astype(np.float64, copy=False).reshape(-1)
    if array.shape[0] != num_boxes:
        raise ValueError(f"{where}: {array.shape[0]} scores for {num_boxes} boxes")
    if not np.isfinite(array).all():
        index = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{where}: score {index} is {array[index]} (scores must be finite numbers)")
    return array


def check_points(points: Any, where: str) -> np.ndarray:
    """Validate (N, 2) finite (x, y) points. Returns float64 (N, 2)."""
    return _finite_rows(points, 2, "points", "as (x, y)", where)


def check_mask(mask: Any, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate a 2-D boolean mask (optionally of a given shape)."""
    array = to_numpy(mask)
    if array.dtype != np.bool_:
        raise TypeError(
            f"{where}: masks must be boolean arrays, got dtype {array.dtype}; binarise explicitly "
            "(e.g. `mask > 127` for a 0/255 PNG, `prob > 0.5` for probabilities) so that no grey value is "
            "silently counted on one side"
        )
    if array.ndim != 2:
        raise ValueError(f"{where}: masks must be 2-D (H, W), got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{where}: prediction mask shape {array.shape} != ground-truth mask shape {tuple(shape)}")
    return array


def image_id_of(record: Mapping[str, Any], kind: str, index: int) -> str:
    if not isinstance(record, Mapping) or "image_id" not in record:
        raise ValueError(f"{kind}[{index}] must be a dict with an 'image_id' key")
    return str(record["image_id"])


def align_by_image_id(
    detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]]
) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """Pair detections with ground truths by ``image_id`` (ground-truth order).

    Both lists must hold each image exactly once and the same set of ids; otherwise a ``ValueError`` lists the
    offending ids. Images without detections must still appear, with empty boxes.
    """
    det_by_id: dict[str, Mapping[str, Any]] = {}
    for index, record in enumerate(detections):
        image_id = image_id_of(record, "detections", index)
        if image_id in det_by_id:
            raise ValueError(f"detections: image_id {image_id!r} appears more than once")
        det_by_id[image_id] = record
    gt_ids: list[str] = []
    seen: set[str] = set()
    for index, record in enumerate(ground_truths):
        image_id = image_id_of(record, "ground_truths", index)
        if image_id in seen:
            raise ValueError(f"ground_truths: image_id {image_id!r} appears more than once")
        seen.add(image_id)
        gt_ids.append(image_id)
    missing = [i for i in gt_ids if i not in det_by_id]
    extra = [i for i in det_by_id if i not in seen]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ground-truth image(s) have no detections entry (e.g. {missing[:5]})")
        if extra:
            parts.append(f"{len(extra)} detection image(s) are not in the ground truth (e.g. {extra[:5]})")
        raise ValueError(
            "prediction and ground-truth image ids do not match: " + "; ".join(parts)
            + ". Pass one entry per image on both sides (empty boxes for images without detections)."
        )
    return [(image_id, det_by_id[image_id], gt) for image_id, gt in zip(gt_ids, ground_truths)]


def safe_div(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with 0/0 (and x/0) defined as 0.0, the convention of every metric here."""
    return float(numerator) / float(denominator) if denominator else 0.0
