"""``bafenet evaluate``: score a model on a dataset split with box, mask, point and sky metrics from one run.

    bafenet evaluate --model runs/bafenet-r18 --dataset ./densesirst --split test --out results.json

The model runs once over the split; its detections (rescaled to original pixels) are scored with

* VOC AP at IoU 0.5, mmdet-exact with legacy "+1" (``mAP07``, ``mAP12``, ``recall``: the BAFE-Net table's numbers),
  precision / recall / F1 at ``--operating-threshold``;
* COCO AP via faster-coco-eval (``coco_mAP``, ``coco_AP50``, ``coco_AP_small``, ...);
* IoU / nIoU / Pd / Fa (BasicIRSTD semantics) on the detections with score >= ``--operating-threshold`` drawn as
  masks, against the pixel-level ``target_mask``;
* point precision / recall / F1 and localisation error of the box centres against the ``points`` labels;
* sky IoU from ``post_process_sky_segmentation`` against ``sky_mask``.

Everything (numbers, conventions, raw detections) goes into one JSON; a precision-recall curve PNG lands beside it.

Any other detector is scored through exactly the same code: ``--predictions FILE`` instead of ``--model`` reads its
detections (JSON: a list of ``{"image_id", "boxes" xyxy in original pixels, "scores"}``, one entry per image of the
split, or the ``detections`` of an earlier results JSON); only the sky metric, which needs the model, is left out.

Reusable pieces: :func:`predict_split`, :func:`load_predictions`, :func:`evaluate_predictions`,
:func:`score_detections`, :func:`evaluate_model`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data.transforms import row_boxes, row_name
from .inference import InferenceModel, inference_loader
from .metrics._checks import check_boxes, check_scores
from .metrics.box import VOC_CONVENTIONS, coco_detection_metrics, match_detections, precision_recall_curve, voc_detection_metrics
from .metrics.breakdown import localisation_quality, metrics_by_size
from .metrics.pixel import PixelMetrics, SkyIoU
from .metrics.points import point_metrics
from .metrics.render import box_centers, boxes_to_mask

__all__ = ["ScoringOptions", "evaluate_model", "evaluate_predictions", "load_predictions", "predict_split",
           "score_detections", "split_ground_truths", "write_pr_curve"]

# The operating point of a model without a stored one (and of detections without a model): the at-a-score metrics of
# `bafenet evaluate` and what `bafenet predict` keeps and draws. The one fallback of the package; the remote-code
# pipeline (models/bafenet/pipeline_bafenet.py, which cannot import bafenet) repeats the same 0.5.
FALLBACK_OPERATING_THRESHOLD = 0.5


@dataclass(frozen=True)
class ScoringOptions:
    """How detections are scored: the settings behind every number of ``bafenet evaluate`` (one owner for them).

    ``operating_threshold``: the score for precision/recall/F1 at a score, masks and points (``None``: the model's
    stored operating point, or 0.5 for detections without a model); ``iou_threshold`` and ``legacy_plus_one``: VOC
    matching (mmdet's +1 widths, the paper's numbers); ``point_radius``: point matching radius in pixels;
    ``pd_distance`` / ``pd_matching``: Pd/Fa target matching (greedy = BasicIRSTD)."""

    operating_threshold: float | None = None
    iou_threshold: float = 0.5
    legacy_plus_one: bool = True
    point_radius: float = 3.0
    pd_distance: float = 3.0
    pd_matching: str = "greedy"

    @classmethod
    def from_arguments(cls, options: "ScoringOptions | None", **fields: Any) -> "ScoringOptions":
        """``options`` (default: the defaults) with ``fields`` changed: the keyword form of every scoring function."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a ScoringOptions, got {type(options).__name__} {options!r}; pass "
                            "ScoringOptions(...) or keyword arguments (operating_threshold=..., iou_threshold=...)")
        return replace(options or cls(), **fields)

    def with_fallback_threshold(self, fallback: float) -> "ScoringOptions":
        """These options with ``operating_threshold`` resolved (``fallback`` when it is None)."""
        return self if self.operating_threshold is not None else replace(self, operating_threshold=float(fallback))

    @classmethod
    def of(cls, options: "ScoringOptions | None", **fields: Any) -> "ScoringOptions":
        """Deprecated (0.3.0) name of :meth:`from_arguments`."""
        warnings.warn("ScoringOptions.of is deprecated; use ScoringOptions.from_arguments", DeprecationWarning,
                      stacklevel=2)
        return cls.from_arguments(options, **fields)

    def at(self, fallback: float) -> "ScoringOptions":
        """Deprecated (0.3.0) name of :meth:`with_fallback_threshold`."""
        warnings.warn("ScoringOptions.at is deprecated; use ScoringOptions.with_fallback_threshold",
                      DeprecationWarning, stacklevel=2)
        return self.with_fallback_threshold(fallback)


def _binary_mask(image: Any, column: str, image_id: str, shape: tuple[int, int]) -> np.ndarray:
    """A decoded mask column (PIL, mode L, values {0, 255}) as an (H, W) bool array; anything else is an error."""
    if image is None:
        raise ValueError(f"image {image_id!r}: column {column!r} is empty")
    array = np.asarray(image)
    if array.ndim == 3:
        raise ValueError(f"image {image_id!r}: column {column!r} has shape {array.shape}; expected a mode-L mask")
    if array.shape != shape:
        raise ValueError(f"image {image_id!r}: column {column!r} is {array.shape[::-1]} (w, h) but the image is "
                         f"{shape[::-1]}")
    values = np.flatnonzero(np.bincount(array.ravel(), minlength=256)) if array.dtype == np.uint8 else np.unique(array)
    if not np.isin(values, (0, 1, 255)).all() or (1 in values and 255 in values):
        raise ValueError(f"image {image_id!r}: column {column!r} has values {values[:8].tolist()}; expected a binary "
                         "mask with values {0, 255} (grey/antialiased masks would be scored ambiguously)")
    return array > 0


def _id_columns(dataset: Any) -> list[str]:
    """``image_id`` and, when the dataset has it, ``image_name`` (the name shown in messages and the JSON)."""
    return ["image_id"] + (["image_name"] if "image_name" in dataset.column_names else [])


def _ground_truth(example: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset row -> {"image_id", "image_name", "boxes" xyxy (XML convention), "points"}."""
    boxes = row_boxes(example)  # COCO xywh -> xyxy = XML values
    points = np.asarray(example.get("points") or [], dtype=np.float64).reshape(-1, 2)
    return {"image_id": example["image_id"], "image_name": row_name(example), "boxes": boxes, "points": points}


def split_ground_truths(dataset: Any) -> list[dict[str, Any]]:
    """The ground truth of every image of ``dataset`` in order: ``{"image_id", "boxes", "points"}`` per image."""
    return [_ground_truth(row) for row in dataset.select_columns([*_id_columns(dataset), "objects", "points"])]


def _check_columns(dataset: Any, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset split has no column(s) {missing} (columns: {dataset.column_names}); "
                         "expected a DenseSIRST dataset built with `bafenet data build`")


def predict_split(
    model: Any,
    processor: Any,
    dataset: Any,
    batch_size: int = 8,
    device: str | None = None,
    detection_threshold: float | None = None,
    sky_metric: SkyIoU | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``model`` over every row of a ``datasets.Dataset`` split and return its detections in original pixels.

    Returns one ``{"image_id", "image_name", "width", "height", "boxes" (N, 4) float32 xyxy, "scores" (N,) float32}``
    per row (in dataset order, sorted by decreasing score), after the processor's post-processing (sigmoid(cls) >
    ``detection_threshold``, by default the processor's own (0.05), NMS, at most ``max_detections``). When
    ``sky_metric`` is given, each predicted sky mask is scored against the row's ``sky_mask`` on the fly (nothing is
    kept in memory).
    ``model``: a PyTorch model, run in eval mode on ``device`` (default: where it already is), which gets its
    train/eval mode back; or a loaded `bafenet.inference.InferenceModel` (PyTorch or onnxruntime), run as loaded
    (``device`` is not used; ``processor`` None: its own).
    """
    import torch

    _check_columns(dataset, ("image", "image_id", "width", "height") + (("sky_mask",) if sky_metric else ()))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model, InferenceModel):
        return _predict(model.with_processor(processor), dataset, batch_size, detection_threshold, sky_metric,
                        progress)
    if device is None:  # stay where the model is (e.g. during training); the CLI picks cuda when available
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    try:
        return _predict(InferenceModel.from_loaded(model, processor, device), dataset, batch_size,
                        detection_threshold, sky_metric, progress)
    finally:
        model.train(was_training)


def _predict(network: InferenceModel, dataset: Any, batch_size: int, threshold: float | None,
             sky_metric: SkyIoU | None, progress: bool) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    ids, widths, heights = dataset["image_id"], dataset["width"], dataset["height"]
    names = dataset["image_name"] if "image_name" in dataset.column_names else [str(i) for i in ids]
    skies = dataset.select_columns(["sky_mask"]) if sky_metric is not None else None
    detections: list[dict[str, Any]] = []
    with tqdm(total=len(dataset), desc="Evaluating", unit="img", disable=not progress) as bar:
        for i, result in network.detect_batches(inference_loader(dataset, network.processor, batch_size), threshold,
                                                sky=sky_metric is not None):
            shape = (int(heights[i]), int(widths[i]))
            detections.append({"image_id": ids[i], "image_name": names[i], "width": shape[1], "height": shape[0],
                               "boxes": result["boxes"], "scores": result["scores"]})
            if sky_metric is not None:
                target = _binary_mask(skies[i]["sky_mask"], "sky_mask", names[i], shape)
                sky_metric.update(result["sky_mask"], target, image_id=names[i])
            bar.update(1)
    return detections


def load_predictions(path: Path, image_ids: Sequence[Any]) -> list[dict[str, Any]]:
    """Read and check a predictions JSON written by any detector; one entry per id of ``image_ids``, in that order
    (ids match as text: ``7`` and ``"7"`` are the same image; the entries carry the split's own id values).

    The file holds a list of ``{"image_id": str, "boxes": [[x1, y1, x2, y2], ...], "scores": [...]}`` (boxes xyxy in
    original pixels, the dataset's convention), or an object whose ``"detections"`` is such a list (a results JSON
    of ``bafenet evaluate``). Each entry's detections come back sorted by decreasing score (stable). Anything
    malformed is a ``ValueError`` naming the entry and the fix.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"cannot read it ({error.strerror or error})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not valid JSON ({error})") from error
    if isinstance(data, dict) and isinstance(data.get("detections"), list):
        data = data["detections"]
    if not isinstance(data, list):
        raise ValueError('expected a JSON list of {"image_id", "boxes", "scores"} objects, one per image '
                         f"(or a results JSON with a 'detections' list), got a JSON {type(data).__name__}")
    by_id: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(data):
        where = f"entry {index}"
        if not isinstance(entry, dict) or not {"image_id", "boxes", "scores"} <= set(entry):
            raise ValueError(f'{where} must be an object with keys "image_id", "boxes" and "scores"')
        image_id = str(entry["image_id"])
        where = f"entry {index} (image_id {image_id!r})"
        if image_id in by_id:
            raise ValueError(f"{where}: image_id appears more than once; give one entry per image")
        arrays = {}
        for key in ("boxes", "scores"):
            try:
                arrays[key] = np.asarray(entry[key], dtype=np.float64)
            except (TypeError, ValueError, OverflowError):  # ragged lists, strings, objects, 400-digit integers
                raise ValueError(f"{where}: {key} is not a list of numbers; expected boxes as [[x1, y1, x2, y2], "
                                 "...] and scores as [s1, ...], one per box") from None
        boxes = check_boxes(arrays["boxes"], where)
        scores = check_scores(arrays["scores"], len(boxes), where)
        order = np.argsort(-scores, kind="stable")
        by_id[image_id] = {"image_id": image_id, "boxes": boxes[order], "scores": scores[order]}
    canonical = {str(i): i for i in image_ids}
    missing = [i for i in canonical if i not in by_id]
    extra = sorted(set(by_id) - set(canonical))
    if missing or extra:
        parts = [f"{len(missing)} image(s) of the split have no entry (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(extra)} entry image id(s) are not in the split (e.g. {extra[:3]})"] if extra else []
        raise ValueError("image ids do not match the split: " + "; ".join(parts)
                         + "; give one entry per image of the split (empty lists for images without detections)")
    return [{**by_id[text], "image_id": value} for text, value in canonical.items()]


def evaluate_predictions(
    detections: Sequence[Mapping[str, Any]],
    dataset: Any,
    options: ScoringOptions | None = None,
    progress: bool = False,
    **scoring: Any,
) -> dict[str, Any]:
    """Score detections (one ``{"image_id", "boxes", "scores"}`` per image) against a dataset split.

    ``options`` / ``scoring`` (fields of :class:`ScoringOptions`, e.g. ``operating_threshold=0.3``): how to score.
    Returns a flat dict of every metric (see the README "evaluation" section): the VOC keys of
    :func:`~bafenet.metrics.box.voc_detection_metrics`, the COCO keys, ``IoU``/``nIoU``/``Pd``/``Fa``/``Fa_x1e6``
    (masks from boxes with score >= ``operating_threshold``), and the ``point_*`` keys. Image ids must match exactly.
    """
    from tqdm.auto import tqdm

    opts = ScoringOptions.from_arguments(options, **scoring).with_fallback_threshold(FALLBACK_OPERATING_THRESHOLD)
    operating_threshold, iou_threshold, legacy_plus_one = (opts.operating_threshold, opts.iou_threshold,
                                                           opts.legacy_plus_one)

    _check_columns(dataset, ("image_id", "width", "height", "objects", "points", "target_mask"))
    ground_truths = split_ground_truths(dataset)

    metrics: dict[str, Any] = voc_detection_metrics(detections, ground_truths, iou_threshold, legacy_plus_one,
                                                    operating_threshold)
    metrics.update(coco_detection_metrics(detections, ground_truths))
    metrics.update(localisation_quality(detections, ground_truths, operating_threshold))
    sizes = {str(i): (int(w), int(h)) for i, w, h in zip(dataset["image_id"], dataset["width"], dataset["height"])}
    metrics["by_size"] = metrics_by_size(detections, ground_truths, sizes, iou_threshold, legacy_plus_one)

    by_id = {str(d["image_id"]): d for d in detections}  # ids already checked to match one-to-one
    pixel = PixelMetrics(distance_threshold=opts.pd_distance, matching=opts.pd_matching)  # type: ignore[arg-type]
    predicted_points = []
    for row in tqdm(dataset.select_columns([*_id_columns(dataset), "width", "height", "target_mask"]),
                    total=len(dataset), desc="Scoring masks", unit="img", disable=not progress):
        image_id, shape = row_name(row), (int(row["height"]), int(row["width"]))
        det = by_id[str(row["image_id"])]
        boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
        keep = np.asarray(det["scores"], dtype=np.float32).reshape(-1) >= np.float32(operating_threshold)
        pixel.update(boxes_to_mask(boxes[keep], *shape), _binary_mask(row["target_mask"], "target_mask", image_id, shape),
                     image_id=image_id)
        predicted_points.append({"image_id": row["image_id"], "points": box_centers(boxes[keep])})
    metrics.update(pixel.compute())
    metrics.update(point_metrics(predicted_points, ground_truths, radius=opts.point_radius))
    return metrics


def conventions(options: ScoringOptions, detection_threshold: float | None,
                predictions: str | None = None) -> dict[str, str]:
    """The exact conventions behind each number, written into the results JSON (``options`` with a resolved
    operating threshold; ``predictions``: the file the detections were read from, when they do not come from a
    model)."""
    operating_threshold, iou_threshold, point_radius = (options.operating_threshold, options.iou_threshold,
                                                        options.point_radius)
    pd_distance, pd_matching, legacy_plus_one = options.pd_distance, options.pd_matching, options.legacy_plus_one
    plus_one = ("legacy +1: widths/heights x2 - x1 + 1 in areas and IoU (mmdet use_legacy_coordinate=True, as in "
                "the BAFE-Net paper)" if legacy_plus_one else "exact: widths/heights x2 - x1 (no +1)")
    box_convention = ("boxes xyxy, DenseSIRST XML convention (0-based, x_max/y_max exclusive), the same convention "
                      "as the ground truth (no -1 shift on either side)")
    if predictions is not None:
        kept = f"score >= {detection_threshold}" if detection_threshold is not None else "all of them"
        source = f"read from {predictions} (original pixels), {kept}, no further post-processing; {box_convention}"
    else:
        cut = detection_threshold if detection_threshold is not None else "the processor's detection_threshold"
        source = (f"model post-processing, rescaled to original pixels: sigmoid(cls) > {cut} (detection_threshold), "
                  f"NMS, at most max_detections per image; {box_convention}")
    return {
        "detections": source,
        "voc": f"IoU >= {iou_threshold}; {plus_one}; " + VOC_CONVENTIONS["matching"],
        "mAP07": VOC_CONVENTIONS["mAP07"],
        "mAP12": VOC_CONVENTIONS["mAP12"],
        "recall": VOC_CONVENTIONS["recall"],
        "precision_recall_f1": "'precision'/'f1' at the end of the curve (all detections); '*_at_score' keep "
        f"score >= {operating_threshold}; best_f1 is tuned on this split (an oracle); 0/0 = 0",
        "coco": "pycocotools COCOeval semantics via faster-coco-eval: IoU 0.50:0.05:0.95, maxDets 100, 101-point, "
        "no +1, area ranges small < 32^2 <= medium < 96^2 (-1 = no ground truth in range)",
        "masks": f"predicted boxes with score >= {operating_threshold} rasterised (pixel centre inside the box) at original "
        "size vs the pixel-level target_mask",
        "IoU_nIoU": "IoU = sum of intersections / sum of unions over the split; nIoU = mean per-image IoU, an image "
        "with both masks empty counts 0",
        "Pd_Fa": f"8-connected components, unweighted centroids, {pd_matching} matching (greedy = BasicIRSTD: first "
        f"unused prediction in label order), distance < {pd_distance} px; Pd = matched targets / mask targets; Fa = "
        "unmatched predicted pixels / all pixels at native size (Fa_x1e6 = Fa x 1e6, the 'x10^-6' of paper tables)",
        "points": f"box centres ((x1+x2)/2 - 0.5, (y1+y2)/2 - 0.5) of detections with score >= {operating_threshold} vs "
        f"the integer points labels (pixel-index x, y); optimal one-to-one matching (scipy linear_sum_assignment), "
        f"distance < {point_radius} px; errors in pixels over matched pairs",
        "by_size": "VOC numbers per image-size group by the longest side: small <= 400 px, medium <= 800 px, "
        "large > 800 px",
        "boxes": f"for each target the detection with score >= {operating_threshold} of highest exact IoU, if >= 0.1: "
        "fraction found, median centre error, mean width/height bias (predicted - true), median IoU",
        "sky": "post_process_sky_segmentation (sigmoid > 0.5) vs sky_mask; sky_IoU accumulated over the split, "
        "sky_mIoU = mean of sky and non-sky IoU",
    }


def write_pr_curve(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]], path: Path,
                   metrics: Mapping[str, Any], iou_threshold: float = 0.5, legacy_plus_one: bool = True,
                   title: str = "") -> Path:
    """Plot the pooled VOC precision-recall curve (raw and envelope) with the operating point; save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matched = match_detections(detections, ground_truths, iou_threshold, legacy_plus_one)
    recall, precision = precision_recall_curve(matched)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    if len(recall):
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        ax.plot(recall, precision, color="0.7", lw=1, label="precision")
        ax.step(recall, envelope, where="post", color="C0", lw=1.8,
                label=f"envelope (mAP12 {metrics['mAP12']:.3f}, mAP07 {metrics['mAP07']:.3f})")
        ax.plot([metrics["recall_at_score"]], [metrics["precision_at_score"]], "o", color="C3",
                label=f"score >= {metrics['operating_threshold']:g} (F1 {metrics['f1_at_score']:.3f})")
    else:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=f"recall (of {matched.num_targets} targets)", ylabel="precision",
           title=title or f"VOC precision-recall, IoU {iou_threshold:g}")
    ax.grid(alpha=0.3)
    if len(recall):
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _json_detections(detections: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Exact float values (float32 -> float64 is lossless), so any tool re-scoring the JSON gets the same numbers."""
    out = []
    for det in detections:
        record = {"image_id": det["image_id"]}
        if "image_name" in det:
            record["image_name"] = str(det["image_name"])
        for key in ("width", "height"):
            if key in det:
                record[key] = int(det[key])
        record["boxes"] = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4).tolist()
        record["scores"] = np.asarray(det["scores"], dtype=np.float64).reshape(-1).tolist()
        out.append(record)
    return out


def results_to_json(results: Mapping[str, Any]) -> str:
    """Strict JSON: metrics and conventions indented, then one line per image of raw detections."""
    head = {k: v for k, v in results.items() if k != "detections"}
    text = json.dumps(head, indent=2, allow_nan=False)
    if "detections" not in results:
        return text + "\n"
    lines = ",\n".join("    " + json.dumps(d, allow_nan=False) for d in results["detections"])
    return text[:-2] + ',\n  "detections": [\n' + lines + "\n  ]\n}\n"


def _clean(value: Any) -> Any:
    """NaN -> None so that the JSON is strict (no bare NaN tokens)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def stored_operating_threshold(model: Any, fallback: float = FALLBACK_OPERATING_THRESHOLD) -> float:
    """``model.config.operating_threshold`` (best-F1 score on validation, stored by the trainer), else ``fallback``."""
    value = getattr(model.config, "operating_threshold", None)
    return fallback if value is None else float(value)


def evaluate_model(model: Any, processor: Any, dataset: Any, options: ScoringOptions | None = None, *,
                   batch_size: int = 8, device: str | None = None, detection_threshold: float | None = None,
                   progress: bool = True, **scoring: Any) -> dict[str, Any]:
    """Predict (:func:`predict_split`) and score a split in one call; returns ``{**metrics, "conventions",
    "detections"}``. ``model``: a PyTorch model or a loaded `bafenet.inference.InferenceModel` (``processor`` None:
    its own).

    ``options`` / ``scoring``: see :class:`ScoringOptions`; an unset ``operating_threshold`` is the model's stored
    operating point (:func:`stored_operating_threshold`)."""
    opts = ScoringOptions.from_arguments(options, **scoring).with_fallback_threshold(stored_operating_threshold(model))
    if processor is None and isinstance(model, InferenceModel):
        processor = model.processor
    sky = SkyIoU() if "sky_mask" in dataset.column_names and hasattr(processor, "post_process_sky_segmentation") else None
    detections = predict_split(model, processor, dataset, batch_size, device, detection_threshold, sky, progress)
    return score_detections(detections, dataset, opts, detection_threshold, progress, sky=sky)


def score_detections(
    detections: Sequence[Mapping[str, Any]],
    dataset: Any,
    options: ScoringOptions | None = None,
    detection_threshold: float | None = None,
    progress: bool = True,
    sky: SkyIoU | None = None,
    predictions: str | None = None,
    **scoring: Any,
) -> dict[str, Any]:
    """Score detections of a model or of a predictions file alike; returns ``{**metrics, "conventions",
    "detections"}`` (``options`` / ``scoring``: see :class:`ScoringOptions`; ``sky``: a filled :class:`SkyIoU` to
    report; ``predictions``: the file they came from)."""
    opts = ScoringOptions.from_arguments(options, **scoring).with_fallback_threshold(FALLBACK_OPERATING_THRESHOLD)
    metrics = evaluate_predictions(detections, dataset, opts, progress)
    if sky is not None:
        metrics.update(sky.compute())
    return {
        **{k: _clean(v) for k, v in metrics.items()},
        "conventions": conventions(opts, detection_threshold, predictions),
        "detections": _json_detections(detections),
    }


def format_summary(results: Mapping[str, Any]) -> str:
    """A readable multi-line summary of a results dict."""
    def f(key: str, digits: int = 3) -> str:
        value = results.get(key)
        return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    meta = results.get("meta", {})
    plus = "legacy +1" if results.get("legacy_plus_one") else "no +1"
    rows = [
        (f"VOC (IoU {f('iou_threshold', 2)}, {plus})",
         f"mAP07 {f('mAP07')}  mAP12 {f('mAP12')}  recall {f('recall')}"),
        (f"  at score >= {f('operating_threshold', 2)}",
         f"precision {f('precision_at_score')}  recall {f('recall_at_score')}  F1 {f('f1_at_score')}  "
         f"(best F1 {f('best_f1')} at score {f('best_f1_score', 2)}, tuned on this split)"),
        ("COCO (IoU .50:.95)",
         f"mAP {f('coco_mAP')}  AP50 {f('coco_AP50')}  AP75 {f('coco_AP75')}  AP_small {f('coco_AP_small')}  "
         f"AR100 {f('coco_AR100')}"),
        ("Masks from boxes",
         f"IoU {f('IoU')}  nIoU {f('nIoU')}  Pd {f('Pd')}  Fa {f('Fa_x1e6', 2)} x1e-6  "
         f"({results.get('num_mask_targets')} mask targets)"),
        (f"Points (< {f('point_radius', 0)} px, optimal)",
         f"precision {f('point_precision')}  recall {f('point_recall')}  F1 {f('point_f1')}  "
         f"error mean {f('point_mean_error', 2)} / median {f('point_median_error', 2)} px"),
    ]
    if results.get("box_found") is not None:
        rows.append((f"Boxes (best IoU >= 0.1, score >= {f('operating_threshold', 2)})",
                     f"found {f('box_found')}  centre error median {f('box_centre_error_median', 2)} px  size bias "
                     f"w {f('box_width_bias', 2)} h {f('box_height_bias', 2)} px  IoU median {f('box_iou_median')}"))
    for group, scores in (results.get("by_size") or {}).items():
        rows.append((f"  {group} images ({scores['images']})",
                     f"mAP07 {scores['mAP07']:.3f}  mAP12 {scores['mAP12']:.3f}  recall {scores['recall']:.3f}  "
                     f"({scores['targets']} targets)"))
    if "sky_IoU" in results:
        rows.append(("Sky segmentation", f"IoU {f('sky_IoU')}  mIoU {f('sky_mIoU')}"))
    lines = [
        f"{meta.get('model') or meta.get('predictions') or 'model'} on {meta.get('dataset', 'dataset')} [{meta.get('config', '?')}/"
        f"{meta.get('split', '?')}]: {results['num_images']} images, {results['num_targets']} targets, "
        f"{results['num_detections']} detections"
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines += [f"  {label.ljust(width)}{text}" for label, text in rows]
    return "\n".join(lines)
