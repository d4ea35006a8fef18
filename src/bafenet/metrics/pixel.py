"""Pixel- and target-level IRSTD metrics with BasicIRSTD / DNANet semantics, plus sky-segmentation IoU.

Every mask is a 2-D ``bool`` array at the *original* image size (no resizing before scoring); probability maps
must be thresholded by the caller (``prob > 0.5`` is the field's norm), so grey values are never guessed.

* ``IoU``: dataset-accumulated foreground IoU, sum_i |P_i & G_i| / sum_i |P_i | G_i| (the papers' "IoU"/"mIoU").
* ``nIoU``: mean over images of |P_i & G_i| / |P_i | G_i|; an image where both masks are empty scores **0**, as in
  open-acm, SeRankDet, SCTransNet and PyIRSTDMetrics (irstd_metrics.md T2). ``num_empty_images`` counts them.
* ``Pd`` / ``Fa`` (BasicIRSTD ``PD_FA``, fixed version): targets and predicted objects are 8-connected components;
  centroids are unweighted pixel means. For each target in label (raster) order, the *first* not-yet-used
  predicted component whose centroid is at distance **< 3 px** (strict) is its match (greedy, order-dependent).
  ``Pd`` = matched targets / targets. ``Fa`` = pixels of predicted components that matched nothing / all pixels,
  summed over the split at native size; ``Fa_x1e6`` is the same number per million pixels, the unit of paper
  tables. It counts every unmatched pixel (not the legacy "area-value" variant that drops unmatched blobs whose
  area equals a matched one's). ``matching="optimal"`` swaps the greedy rule for a maximum one-to-one matching
  (``scipy.optimize.linear_sum_assignment``), which is order-independent (T3: greedy Pd 0.5, optimal Pd 1.0).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ._checks import check_mask, safe_div

__all__ = ["PixelMetrics", "SkyIoU", "components", "match_components", "pixel_metrics"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a bool mask, numbered in raster order of their first pixel (as skimage).

    Returns ``(labels (H, W) int, centroids (K, 2) as (row, col), areas (K,))``.
    """
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return labels, np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    rows, cols = np.nonzero(labels)  # sums of integer coordinates per label: exact in float64, as center_of_mass
    owner = labels[rows, cols]
    areas = np.bincount(owner, minlength=count + 1)[1:]
    centroids = np.stack([np.bincount(owner, weights=rows, minlength=count + 1)[1:],
                          np.bincount(owner, weights=cols, minlength=count + 1)[1:]], axis=1) / areas[:, None]
    return labels, centroids, areas


def match_components(
    target_centroids: np.ndarray,
    pred_centroids: np.ndarray,
    distance_threshold: float = 3.0,
    matching: Literal["greedy", "optimal"] = "greedy",
) -> np.ndarray:
    """Index of the predicted component matched to each target (-1 when none), by centroid distance < threshold."""
    matched = np.full(len(target_centroids), -1, dtype=np.int64)
    if len(target_centroids) == 0 or len(pred_centroids) == 0:
        return matched
    distance = np.linalg.norm(target_centroids[:, None, :] - pred_centroids[None, :, :], axis=-1)
    valid = distance < distance_threshold
    if matching == "greedy":
        used = np.zeros(len(pred_centroids), dtype=bool)
        for t in range(len(target_centroids)):
            candidates = np.flatnonzero(valid[t] & ~used)
            if candidates.size:
                matched[t] = candidates[0]
                used[candidates[0]] = True
    elif matching == "optimal":
        if valid.any():
            cost = np.where(valid, distance, distance_threshold * (min(valid.shape) + 1))
            rows, cols = linear_sum_assignment(cost)
            keep = valid[rows, cols]
            matched[rows[keep]] = cols[keep]
    else:
        raise ValueError(f"matching must be 'greedy' or 'optimal', got {matching!r}")
    return matched


class PixelMetrics:
    """Streaming IoU, nIoU, Pd and Fa over a split: call :meth:`update` once per image, then :meth:`compute`."""

    def __init__(self, distance_threshold: float = 3.0, matching: Literal["greedy", "optimal"] = "greedy") -> None:
        if distance_threshold <= 0:
            raise ValueError(f"distance_threshold must be positive, got {distance_threshold}")
        if matching not in ("greedy", "optimal"):
            raise ValueError(f"matching must be 'greedy' or 'optimal', got {matching!r}")
        self.distance_threshold = float(distance_threshold)
        self.matching = matching
        self.intersection = 0
        self.union = 0
        self.per_image_iou: list[float] = []
        self.num_empty_images = 0
        self.num_targets = 0
        self.num_detected = 0
        self.false_alarm_pixels = 0
        self.total_pixels = 0

    def update(self, pred: Any, target: Any, image_id: str = "") -> None:
        """Add one image: ``pred`` and ``target`` are (H, W) bool masks of the same shape."""
        where = f"image {image_id!r}" if image_id else "PixelMetrics.update"
        target = check_mask(target, f"{where} (ground truth)")
        pred = check_mask(pred, f"{where} (prediction)", shape=target.shape)
        intersection = int(np.count_nonzero(pred & target))
        union = int(np.count_nonzero(pred | target))
        self.intersection += intersection
        self.union += union
        self.per_image_iou.append(safe_div(intersection, union))
        self.num_empty_images += union == 0

        _, target_centroids, _ = components(target)
        pred_labels, pred_centroids, pred_areas = components(pred)
        matched = match_components(target_centroids, pred_centroids, self.distance_threshold, self.matching)
        hit = matched[matched >= 0]
        self.num_targets += len(target_centroids)
        self.num_detected += len(hit)
        self.false_alarm_pixels += int(pred_areas.sum() - pred_areas[hit].sum())
        self.total_pixels += target.size

    def compute(self) -> dict[str, float | int]:
        fa = safe_div(self.false_alarm_pixels, self.total_pixels)
        return {
            "IoU": safe_div(self.intersection, self.union),
            "nIoU": float(np.mean(self.per_image_iou)) if self.per_image_iou else 0.0,
            "Pd": safe_div(self.num_detected, self.num_targets),
            "Fa": fa,
            "Fa_x1e6": fa * 1e6,
            "num_mask_targets": self.num_targets,
            "num_mask_targets_detected": self.num_detected,
            "false_alarm_pixels": self.false_alarm_pixels,
            "num_pixels": self.total_pixels,
            "num_empty_images": self.num_empty_images,
            "pd_distance_threshold": self.distance_threshold,
        }


def pixel_metrics(
    preds: Iterable[Any],
    targets: Iterable[Any],
    distance_threshold: float = 3.0,
    matching: Literal["greedy", "optimal"] = "greedy",
) -> dict[str, float | int]:
    """:class:`PixelMetrics` over paired sequences of (H, W) bool masks."""
    preds, targets = list(preds), list(targets)
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} prediction masks for {len(targets)} ground-truth masks")
    metric = PixelMetrics(distance_threshold, matching)
    for index, (pred, target) in enumerate(zip(preds, targets)):
        metric.update(pred, target, image_id=str(index))
    return metric.compute()


class SkyIoU:
    """Sky-segmentation IoU accumulated over a split (sky = foreground), plus the two-class mean IoU."""

    def __init__(self) -> None:
        self.counts = np.zeros(4, dtype=np.int64)  # tp, fp, fn, tn

    def update(self, pred: Any, target: Any, image_id: str = "") -> None:
        where = f"image {image_id!r}" if image_id else "SkyIoU.update"
        target = check_mask(target, f"{where} (ground-truth sky)")
        pred = check_mask(pred, f"{where} (predicted sky)", shape=target.shape)
        tp = int(np.count_nonzero(pred & target))
        fp = int(np.count_nonzero(pred)) - tp
        fn = int(np.count_nonzero(target)) - tp
        self.counts += [tp, fp, fn, target.size - tp - fp - fn]

    def compute(self) -> dict[str, float]:
        tp, fp, fn, tn = (int(c) for c in self.counts)
        sky = safe_div(tp, tp + fp + fn)
        other = safe_div(tn, tn + fp + fn)
        return {"sky_IoU": sky, "sky_mIoU": (sky + other) / 2, "sky_pixel_accuracy": safe_div(tp + tn, self.counts.sum())}
