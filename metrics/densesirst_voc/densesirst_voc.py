"""DenseSIRST box metrics as a Hugging Face `evaluate` module: VOC mAP07 / mAP12 / recall, mmdet-exact.

Self-contained (numpy, datasets, evaluate; no `bafenet` import), so it runs as a metric from the Hub or a copy::

    import evaluate
    metric = evaluate.load("./metrics/densesirst_voc")   # or the Hub repo holding this folder
    metric.add_batch(predictions=[{"image_id": "Misc_1", "boxes": [[203, 36, 206, 40]], "scores": [0.9]}],
                     references=[{"image_id": "Misc_1", "boxes": [[203, 36, 206, 40]]}])
    metric.compute()  # {"mAP07": 1.0, "mAP12": 1.0, "recall": 1.0, ...}

The functions below are copies of `bafenet.metrics.box` / `bafenet.metrics._checks` (VOC part);
tests/test_metrics_evaluate_module.py checks that both give the same numbers and that `_CITATION` equals
`bafenet.CITATION` (the citation of the cards). COCO AP lives in `bafenet.metrics.box.coco_detection_metrics`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import datasets
import evaluate
import numpy as np

ELEVEN_POINT_RECALLS = np.arange(0, 1 + 1e-3, 0.1)  # mmdet's, np.arange quirk kept


# -- copied from bafenet.metrics (VOC part) ----------------------------------------------------------------------------
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


# -- the evaluate module -----------------------------------------------------------------------------------------------
_DESCRIPTION = """\
Box-level detection metrics for DenseSIRST (single class "target"). VOC AP at an IoU threshold (default 0.5) exactly
as mmdetection's eval_map: mAP07 = 11-point AP, mAP12 = area AP, recall = final recall over all detections, plus
precision/recall/F1 at a score threshold. `legacy_plus_one=True` (default) adds 1 to widths and heights in areas and
IoU like mmdet's legacy coordinates, which produced the BAFE-Net paper's numbers. (COCO AP: `bafenet.metrics.box.coco_detection_metrics`.) Boxes are xyxy in original-image pixels, DenseSIRST XML
convention (0-based, x_max/y_max exclusive), the same on both sides.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one dict per image: "image_id" (str), "boxes" (list of [x1, y1, x2, y2]), "scores" (list of float).
    references: one dict per image: "image_id" (str), "boxes" (list of [x1, y1, x2, y2]). Every image must appear
        on both sides (empty lists for images without boxes); order does not matter.
    iou_threshold (float, default 0.5), legacy_plus_one (bool, default True), operating_threshold (float, default 0.5):
        see bafenet.metrics.box.voc_detection_metrics.
Returns:
    dict with mAP07, mAP12, recall, precision, f1, precision_at_score, recall_at_score, f1_at_score, best_f1,
    best_f1_score, num_images, num_targets, num_detections, iou_threshold, operating_threshold, legacy_plus_one
Examples:
    >>> metric = evaluate.load("./metrics/densesirst_voc")
    >>> result = metric.compute(predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
    ...                         references=[{"image_id": "a", "boxes": [[0, 0, 4, 4]]}])
    >>> result["mAP07"], result["mAP12"], result["recall"]
    (1.0, 1.0, 1.0)
"""

_CITATION = """\
@article{xiao2024bafenet,
  title   = {Background Semantics Matter: Cross-Task Feature Exchange Network for Clustered Infrared Small Target
             Detection With Sky-Annotated Dataset},
  author  = {Xiao, Mengxuan and Dai, Qun and Zhu, Yiming and Guo, Kehua and Wang, Huan and Shu, Xiangbo and
             Yang, Jian and Dai, Yimian},
  journal = {arXiv preprint arXiv:2407.20078},
  year    = {2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DensesirstVoc(evaluate.Metric):
    def _info(self):
        box = datasets.List(datasets.List(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "image_id": datasets.Value("string"),
                        "boxes": box,
                        "scores": datasets.List(datasets.Value("float32")),
                    },
                    "references": {"image_id": datasets.Value("string"), "boxes": box},
                }
            ),
            reference_urls=["https://arxiv.org/abs/2407.20078", "https://github.com/GrokCV/DenseSIRST"],
        )

    def _compute(self, predictions, references, iou_threshold=0.5, legacy_plus_one=True, operating_threshold=0.5):
        return voc_detection_metrics(predictions, references, iou_threshold=iou_threshold,
                                     legacy_plus_one=legacy_plus_one, operating_threshold=operating_threshold)
