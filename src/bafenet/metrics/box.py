"""Box-level detection metrics: VOC AP exactly as mmdetection's ``eval_map``, COCO AP via ``faster-coco-eval``.

Inputs, one entry per image on both sides (images without detections still appear, with empty arrays)::

    detections    = [{"image_id": "Misc_1", "boxes": (N, 4) xyxy, "scores": (N,)}, ...]
    ground_truths = [{"image_id": "Misc_1", "boxes": (M, 4) xyxy}, ...]

Box convention. Boxes are in original-image pixels in the dataset's convention, which is the DenseSIRST XML's:
0-based, ``x_min`` = first covered column, ``x_max`` = last covered column + 1 (exclusive). The model is trained on
and predicts in this same space, so predictions and ground truth never need shifting.

``legacy_plus_one=True`` (default) computes widths and heights as ``x2 - x1 + 1`` in areas and intersections, like
mmdet's ``bbox_overlaps(..., use_legacy_coordinate=True)`` that VOCMetric hard-codes, which produced every number in
the BAFE-Net table. With exclusive-max boxes this makes each box one pixel wider and taller than its pixel extent,
so small boxes overlap more (a 4x4 box shifted one pixel diagonally: IoU 0.471 instead of the exact 0.391).
``legacy_plus_one=False`` gives the exact IoU of the covered pixel sets.

The original BAFE-Net loader also subtracts 1 from all four XML coordinates of the ground truth. That is a pure
translation: applied to ground truth *and* to the training targets (hence predictions) it changes no IoU, which is
why we keep everything in XML space. It only hurts when one side is shifted and the other is not: an exact XML box
scored against shifted ground truth of a 4x4 target has legacy IoU 0.471, a miss (irstd_metrics.md T7).

VOC matching (mmdet ``tpfp_default``, single class, no difficult boxes): in each image, detections are visited by
decreasing score; each takes the ground truth of maximum IoU; it is a TP if that IoU >= ``iou_threshold`` and the
ground truth is not yet matched, otherwise an FP (no fall-back to the second-best ground truth). All detections are
then pooled and sorted by score (stable sort: ties keep image order, then input order). Nothing is capped here; the
model's post-processing (score >= 0.05, NMS, <= 100 per image) decides what is scored.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._checks import align_by_image_id, check_boxes, check_scores, safe_div

__all__ = [
    "VOC_CONVENTIONS",
    "MatchedDetections",
    "average_precision",
    "box_iou",
    "coco_detection_metrics",
    "match_detections",
    "precision_recall_curve",
    "voc_detection_metrics",
    "voc_tpfp",
]

# mmdet's 11 recall thresholds, built exactly as in ``average_precision`` (np.arange, so the 4th is
# 0.30000000000000004 and a recall of exactly 3/10 does not reach it; we keep the quirk to match published numbers).
ELEVEN_POINT_RECALLS = np.arange(0, 1 + 1e-3, 0.1)

VOC_CONVENTIONS = {
    "box_format": "xyxy, original-image pixels, DenseSIRST XML convention (0-based, x_max/y_max exclusive)",
    "matching": "mmdet tpfp_default: per image by decreasing score, max-IoU ground truth, TP if IoU >= threshold "
    "and not yet matched, else FP (no fall-back); pooled over images, stable sort by score",
    "mAP07": "11-point interpolated AP (mmdet eval_mode='11points', recall thresholds np.arange(0, 1.001, 0.1))",
    "mAP12": "area under the monotone precision envelope (mmdet eval_mode='area', VOC2010+)",
    "recall": "final recall over all scored detections (mmdet's printed recall; the paper's recall07/recall12)",
    "precision_f1": "precision/recall/F1 at score >= operating_threshold use the same matching; 0/0 is defined as 0",
}


def box_iou(boxes1: Any, boxes2: Any, legacy_plus_one: bool = True) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, (N, 4) x (M, 4) -> (N, M); ``legacy_plus_one`` as in mmdet's legacy coordinates."""
    b1 = check_boxes(boxes1, "boxes1")
    b2 = check_boxes(boxes2, "boxes2")
    extra = 1.0 if legacy_plus_one else 0.0
    area1 = (b1[:, 2] - b1[:, 0] + extra) * (b1[:, 3] - b1[:, 1] + extra)
    area2 = (b2[:, 2] - b2[:, 0] + extra) * (b2[:, 3] - b2[:, 1] + extra)
    width = np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0]) + extra
    height = np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1]) + extra
    overlap = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = np.maximum(area1[:, None] + area2[None, :] - overlap, 1e-6)  # mmdet's eps
    return overlap / union


def voc_tpfp(
    det_boxes: Any,
    det_scores: Any,
    gt_boxes: Any,
    iou_threshold: float = 0.5,
    legacy_plus_one: bool = True,
) -> np.ndarray:
    """TP flags of one image's detections (input order) under mmdet ``tpfp_default``; FP = ``~tp``."""
    det_boxes = check_boxes(det_boxes, "detections")
    det_scores = check_scores(det_scores, len(det_boxes), "detections")
    gt_boxes = check_boxes(gt_boxes, "ground truth")
    tp = np.zeros(len(det_boxes), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(det_boxes, gt_boxes, legacy_plus_one)
    best_iou = ious.max(axis=1)
    best_gt = ious.argmax(axis=1)
    covered = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.argsort(-det_scores, kind="stable"):
        if best_iou[i] >= iou_threshold and not covered[best_gt[i]]:
            covered[best_gt[i]] = True
            tp[i] = True
    return tp


@dataclass(frozen=True)
class MatchedDetections:
    """All detections of a split after VOC matching, pooled and sorted by decreasing score."""

    scores: np.ndarray  # (D,) float64, decreasing
    tp: np.ndarray  # (D,) bool; FP = ~tp
    image_ids: list[str]  # (D,) image of each detection
    num_targets: int  # ground-truth boxes over all images
    num_images: int


def match_detections(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    legacy_plus_one: bool = True,
) -> MatchedDetections:
    """Validate the inputs, match each image's detections with ``voc_tpfp`` and pool them by score."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    all_scores, all_tp, all_ids = [], [], []
    num_targets = 0
    pairs = align_by_image_id(detections, ground_truths)
    for image_id, det, gt in pairs:
        for key, record, kind in (("boxes", det, "detections"), ("scores", det, "detections"), ("boxes", gt, "ground_truths")):
            if key not in record:
                raise ValueError(f"{kind} for image {image_id!r} has no {key!r} key")
        det_boxes = check_boxes(det["boxes"], f"detections[{image_id!r}]")
        det_scores = check_scores(det["scores"], len(det_boxes), f"detections[{image_id!r}]")
        gt_boxes = check_boxes(gt["boxes"], f"ground_truths[{image_id!r}]")
        num_targets += len(gt_boxes)
        all_tp.append(voc_tpfp(det_boxes, det_scores, gt_boxes, iou_threshold, legacy_plus_one))
        all_scores.append(det_scores)
        all_ids.extend([image_id] * len(det_scores))
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    return MatchedDetections(scores[order], tp[order], [all_ids[i] for i in order], num_targets, len(pairs))


def precision_recall_curve(matched: MatchedDetections) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (recall, precision) after each pooled detection, as in mmdet (recall = TP / #targets)."""
    tp = np.cumsum(matched.tp, dtype=np.float64)
    fp = np.cumsum(~matched.tp, dtype=np.float64)
    eps = np.finfo(np.float32).eps
    recall = tp / max(matched.num_targets, eps)
    precision = tp / np.maximum(tp + fp, eps)
    return recall, precision


def average_precision(recall: Any, precision: Any, mode: Literal["area", "11points"] = "area") -> float:
    """AP of one precision-recall curve, mmdet ``average_precision`` for one scale.

    ``"area"``: sum of recall steps times the right-to-left maximum of precision (VOC2010+, "mAP12").
    ``"11points"``: mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t, 0 where none (VOC2007).
    """
    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64).reshape(-1)
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision differ in length: {recall.shape} vs {precision.shape}")
    if mode == "area":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if mode == "11points":
        total = 0.0
        for threshold in ELEVEN_POINT_RECALLS:
            reached = precision[recall >= threshold]
            total += reached.max() if reached.size else 0.0
        return float(total / 11)
    raise ValueError(f"mode must be 'area' or '11points', got {mode!r}")


def _f1(precision: float, recall: float) -> float:
    return safe_div(2 * precision * recall, precision + recall)


def voc_detection_metrics(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.5,
    legacy_plus_one: bool = True,
    operating_threshold: float = 0.5,
) -> dict[str, float | int]:
    """VOC detection metrics of one split (single class), mmdet-exact. All values are plain floats/ints.

    Keys:
        ``mAP07`` / ``mAP12``: 11-point / area AP at ``iou_threshold`` (the paper's mAP07 / mAP12).
        ``recall`` / ``precision`` / ``f1``: at the end of the curve, i.e. over *all* scored detections
        (``recall`` is mmdet's printed recall, the paper's recall07 / recall12).
        ``precision_at_score`` / ``recall_at_score`` / ``f1_at_score`` and ``tp_at_score`` / ``fp_at_score`` /
        ``fn_at_score``: operating point keeping detections with score >= ``operating_threshold``.
        ``best_f1`` / ``best_f1_score``: the highest F1 along the curve and the score threshold achieving it
        (tuned on the data being scored: an oracle, not a fair operating point for the test split; NaN without
        any true positive).
        ``num_images``, ``num_targets``, ``num_detections``, ``iou_threshold``, ``operating_threshold``,
        ``legacy_plus_one`` (1/0).
    With no ground-truth boxes at all, AP and recall are 0 (mmdet's choice).
    """
    matched = match_detections(detections, ground_truths, iou_threshold, legacy_plus_one)
    recall, precision = precision_recall_curve(matched)
    num_dets = len(matched.scores)
    final_recall = float(recall[-1]) if num_dets else 0.0
    final_precision = float(precision[-1]) if num_dets else 0.0

    # detections with score >= threshold, compared in float32 (the model's precision) so that a float32 score
    # printed as 0.7 passes a threshold of 0.7
    scores32 = matched.scores.astype(np.float32)
    kept = int(np.searchsorted(-scores32, -np.float32(operating_threshold), side="right"))
    tp_at = int(matched.tp[:kept].sum())
    fp_at = kept - tp_at
    p_at = safe_div(tp_at, kept)
    r_at = safe_div(tp_at, matched.num_targets)

    best_f1, best_score = 0.0, float("nan")
    if matched.tp.any():
        # a threshold cannot split tied scores: only the last detection of each tie block is an operating point
        ends = np.flatnonzero(np.append(matched.scores[1:] != matched.scores[:-1], True))
        f1 = 2 * precision[ends] * recall[ends] / np.maximum(precision[ends] + recall[ends], 1e-12)
        best = int(np.argmax(f1))
        # the score as its shortest float32 text (0.9, not 0.8999999761581421), still >= the float32 score
        best_f1, best_score = float(f1[best]), float(str(np.float32(matched.scores[ends[best]])))

    return {
        "mAP07": average_precision(recall, precision, "11points"),
        "mAP12": average_precision(recall, precision, "area"),
        "recall": final_recall,
        "precision": final_precision,
        "f1": _f1(final_precision, final_recall),
        "precision_at_score": p_at,
        "recall_at_score": r_at,
        "f1_at_score": _f1(p_at, r_at),
        "tp_at_score": tp_at,
        "fp_at_score": fp_at,
        "fn_at_score": matched.num_targets - tp_at,
        "best_f1": best_f1,
        "best_f1_score": best_score,
        "num_images": matched.num_images,
        "num_targets": matched.num_targets,
        "num_detections": num_dets,
        "iou_threshold": float(iou_threshold),
        "operating_threshold": float(operating_threshold),
        "legacy_plus_one": int(legacy_plus_one),
    }


COCO_KEYS = {
    "AP_all": "coco_mAP",
    "AP_50": "coco_AP50",
    "AP_75": "coco_AP75",
    "AP_small": "coco_AP_small",
    "AP_medium": "coco_AP_medium",
    "AP_large": "coco_AP_large",
    "AR_all": "coco_AR1",
    "AR_second": "coco_AR10",
    "AR_third": "coco_AR100",
    "AR_small": "coco_AR_small",
}


def coco_detection_metrics(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
) -> dict[str, float]:
    """COCO box metrics (pycocotools ``COCOeval`` semantics) computed by ``faster-coco-eval``.

    IoU 0.50:0.05:0.95, at most 100 detections per image (highest scores), 101-point interpolation, no "+1" in
    widths, COCO area ranges (small < 32^2 <= medium < 96^2 px, on the ground-truth box area w*h). Values of -1 mean
    "no ground truth in that range" (on DenseSIRST, AP_medium and AP_large). Keys: ``coco_mAP`` (AP@[.5:.95]),
    ``coco_AP50``, ``coco_AP75``, ``coco_AP_small/medium/large``, ``coco_AR1/10/100``, ``coco_AR_small``.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    images, annotations, results = [], [], []
    for index, (image_id, det, gt) in enumerate(align_by_image_id(detections, ground_truths)):
        images.append({"id": index + 1, "file_name": image_id})
        gt_boxes = check_boxes(gt["boxes"], f"ground_truths[{image_id!r}]")
        det_boxes = check_boxes(det["boxes"], f"detections[{image_id!r}]")
        det_scores = check_scores(det["scores"], len(det_boxes), f"detections[{image_id!r}]")
        for x1, y1, x2, y2 in gt_boxes.tolist():
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1, "bbox": [x1, y1, w, h],
                 "area": w * h, "iscrowd": 0}
            )
        for (x1, y1, x2, y2), score in zip(det_boxes.tolist(), det_scores.tolist()):
            results.append({"image_id": index + 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    if not annotations or not results:  # COCOeval needs both sides; nothing can be matched anyway
        empty = {value: 0.0 for value in COCO_KEYS.values()}
        if not annotations:
            empty = {key: -1.0 for key in empty}
        return empty
    quiet = lambda *args, **kwargs: None  # noqa: E731  (faster-coco-eval prints through this hook)
    coco_gt = COCO(print_function=quiet)
    coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "target"}]}
    coco_gt.createIndex()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
        evaluator.run()
    stats = evaluator.stats_as_dict
    return {name: float(stats[key]) for key, name in COCO_KEYS.items()}
