"""Where detections succeed: VOC numbers per image-size group, and how well boxes are placed on tiny targets.

DenseSIRST mixes ~330x220 frames, 640x512 frames and 1280x1024+ frames whose 3x3 targets the paper's 512x512 resize
shrinks to ~1.2 px; one pooled mAP hides which of them a model handles. :func:`metrics_by_size` scores each group on
its own (same VOC code as :func:`~bafenet.metrics.box.voc_detection_metrics`). :func:`localisation_quality` measures
box placement where IoU 0.5 is harsh on 3-5 px boxes: for every target, the best-overlapping confident detection's
centre error and size bias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .box import box_iou, voc_detection_metrics

__all__ = ["SIZE_GROUPS", "localisation_quality", "metrics_by_size", "size_group"]

# (name, largest image side at most): the first group that fits
SIZE_GROUPS: tuple[tuple[str, float], ...] = (("small", 400), ("medium", 800), ("large", float("inf")))


def size_group(width: int, height: int) -> str:
    """``small`` (longest side <= 400 px, e.g. 330x220), ``medium`` (<= 800, e.g. 640x512) or ``large``."""
    side = max(int(width), int(height))
    return next(name for name, limit in SIZE_GROUPS if side <= limit)


def metrics_by_size(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
                    sizes: Mapping[str, tuple[int, int]], iou_threshold: float = 0.5,
                    legacy_plus_one: bool = True) -> dict[str, dict[str, Any]]:
    """VOC ``mAP07``/``mAP12``/``recall`` of each size group; ``sizes`` maps image id -> (width, height)."""
    out: dict[str, dict[str, Any]] = {}
    for name, _ in SIZE_GROUPS:
        ids = {i for i, (w, h) in sizes.items() if size_group(w, h) == name}
        if not ids:
            continue
        dets = [d for d in detections if str(d["image_id"]) in ids]
        gts = [g for g in ground_truths if str(g["image_id"]) in ids]
        scores = voc_detection_metrics(dets, gts, iou_threshold, legacy_plus_one)
        out[name] = {"images": len(gts), "targets": int(sum(len(g["boxes"]) for g in gts)),
                     **{k: float(scores[k]) for k in ("mAP07", "mAP12", "recall")}}
    return out


def localisation_quality(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
                         operating_threshold: float, min_iou: float = 0.1) -> dict[str, float | int | None]:
    """For each target, the detection (score >= ``operating_threshold``) of highest exact IoU, if >= ``min_iou``:

    ``box_found`` (fraction of targets with one), ``box_centre_error_median`` (px, centre to centre),
    ``box_width_bias`` / ``box_height_bias`` (mean predicted minus true size, px) and ``box_iou_median``.
    """
    by_id = {str(d["image_id"]): d for d in detections}
    errors, widths, heights, ious, targets = [], [], [], [], 0
    for gt in ground_truths:
        truth = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
        targets += len(truth)
        det = by_id.get(str(gt["image_id"]))
        if det is None or not len(truth):
            continue
        keep = np.asarray(det["scores"], dtype=np.float64).reshape(-1) >= operating_threshold
        boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)[keep]
        if not len(boxes):
            continue
        overlap = box_iou(truth, boxes, legacy_plus_one=False)
        best = overlap.argmax(axis=1)
        for t, b in enumerate(best):
            if overlap[t, b] < min_iou:
                continue
            pred, true = boxes[b], truth[t]
            errors.append(float(np.hypot(*((pred[:2] + pred[2:]) / 2 - (true[:2] + true[2:]) / 2))))
            widths.append(float((pred[2] - pred[0]) - (true[2] - true[0])))
            heights.append(float((pred[3] - pred[1]) - (true[3] - true[1])))
            ious.append(float(overlap[t, b]))
    found = len(errors)
    return {
        "box_found": found / targets if targets else None,
        "box_centre_error_median": float(np.median(errors)) if found else None,
        "box_width_bias": float(np.mean(widths)) if found else None,
        "box_height_bias": float(np.mean(heights)) if found else None,
        "box_iou_median": float(np.median(ious)) if found else None,
    }
