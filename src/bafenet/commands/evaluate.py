"""``bafenet evaluate``: the command line of `bafenet.evaluation` (flags, output checks, the results JSON and its PR
curve, the printed summary). ``--model`` is loaded as a `bafenet.inference.InferenceModel`, as ``bafenet predict``
loads it: the PyTorch model, or with ``--onnx FILE`` its dense network in onnxruntime."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from bafenet.evaluation import (
    FALLBACK_OPERATING_THRESHOLD,
    ScoringOptions,
    evaluate_model,
    format_summary,
    load_predictions,
    results_to_json,
    score_detections,
    split_ground_truths,
    write_pr_curve,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bafenet.inputs import add_deprecated_alias

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder or Hub repo id (save_pretrained)")
    source.add_argument("--predictions", type=Path, default=None,
                        help="score another detector's detections instead of a model: JSON list of {image_id, boxes "
                        "(xyxy, original pixels), scores}, one entry per image of the split")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="with --model: run the dense network from this ONNX file in onnxruntime on the CPU (from "
                        "`bafenet export onnx --model MODEL`; the processor and config still come from --model)")
    parser.add_argument("--dataset", required=True, help="dataset folder (bafenet data build) or Hub repo id")
    parser.add_argument("--config", default="default", help="dataset config: default (v2 splits) or v1")
    parser.add_argument("--split", default="test", help="split to score, e.g. test, validation, train+validation")
    parser.add_argument("--out", default="results.json", type=Path,
                        help="results JSON; the PR curve is written beside it as <stem>_pr_curve.png")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda when available, else cpu; with --onnx: cpu only)")
    parser.add_argument("--operating-threshold", type=float, default=None,
                        help="operating point for precision/recall/F1, masks (IoU/nIoU/Pd/Fa) and points (default: "
                        "the model's operating_threshold, the best-F1 score on validation stored by training; 0.5 "
                        "for a model without one)")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help="detection cut of the post-processing, on sigmoid(cls) before NMS (default: the image "
                        "processor's detection_threshold, 0.05; with --predictions: keep every detection)")
    add_deprecated_alias(parser, "--score-threshold", "--operating-threshold", "operating_threshold", type=float)
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="VOC IoU threshold")
    parser.add_argument("--no-legacy-plus-one", dest="legacy_plus_one", action="store_false",
                        help="exact IoU instead of mmdet's legacy +1 widths (the paper's numbers use +1)")
    parser.add_argument("--point-radius", type=float, default=3.0, help="point matching radius in pixels (strict <)")
    parser.add_argument("--pd-matching", choices=("greedy", "optimal"), default="greedy",
                        help="Pd/Fa target matching: greedy (BasicIRSTD, the field's numbers) or optimal (Hungarian)")
    parser.add_argument("--revision", default=None, help="model revision on the Hub")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own .py files (default: the installed BAFE-Net classes load it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out (and its PR curve) even when they are not an earlier evaluate output")


def _earlier_results(path: Path) -> bool:
    """Whether ``path`` is a results JSON written by ``bafenet evaluate`` (its ``meta`` names the bafenet version)."""
    try:
        return "bafenet" in json.loads(path.read_text()).get("meta", {})
    except (OSError, ValueError, AttributeError):
        return False


def _scoring_options(args: argparse.Namespace) -> ScoringOptions:
    """The scoring flags of ``bafenet evaluate`` as :class:`ScoringOptions`."""
    return ScoringOptions(operating_threshold=args.operating_threshold, iou_threshold=args.iou_threshold,
                          legacy_plus_one=args.legacy_plus_one, point_radius=args.point_radius,
                          pd_matching=args.pd_matching)


def _predictions_results(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    """``--predictions FILE``: check the file against the split and score it; a malformed file exits with one line."""
    try:
        detections = load_predictions(args.predictions, dataset["image_id"])
    except ValueError as error:
        raise SystemExit(f"bafenet evaluate: error: --predictions {args.predictions}: {error}") from None
    if args.detection_threshold is not None:
        detections = [{**d, "boxes": d["boxes"][d["scores"] >= args.detection_threshold],
                       "scores": d["scores"][d["scores"] >= args.detection_threshold]} for d in detections]
    return score_detections(detections, dataset, _scoring_options(args), detection_threshold=args.detection_threshold,
                            predictions=str(args.predictions))


def _load_network(args: argparse.Namespace) -> Any:
    """``--model`` (and ``--onnx``) loaded as a `bafenet.inference.InferenceModel`; a bad ``--onnx`` is one line."""
    from bafenet.inference import InferenceModel

    return InferenceModel.load(args.model, args.onnx, device=args.device, trust_remote_code=args.trust_remote_code,
                               revision=args.revision)


def _model_results(args: argparse.Namespace, network: Any, dataset: Any) -> tuple[dict[str, Any], str]:
    """``--model``: run the loaded network over the split and score it; returns the results and the device used."""
    args.operating_threshold_source = (
        "--operating-threshold" if args.operating_threshold is not None else "model config operating_threshold"
        if getattr(network.config, "operating_threshold", None) is not None else
        f"default {FALLBACK_OPERATING_THRESHOLD} (the model stores no operating_threshold)")
    results = evaluate_model(network, network.processor, dataset, batch_size=args.batch_size,
                             options=_scoring_options(args), detection_threshold=args.detection_threshold)
    return results, str(network.device) + (" (onnxruntime)" if network.session is not None else "")


def run(args: argparse.Namespace) -> int:
    from bafenet.inputs import check_model_path
    from bafenet.outputs import OutputLock, UserError

    out: Path = args.out
    if out.suffix != ".json":
        raise UserError(f"--out {out}: expected a .json file name, e.g. {out.with_suffix('.json')}")
    if args.onnx is not None and args.predictions is not None:
        raise UserError(f"--onnx {args.onnx}: runs a model's dense network, so it goes with --model, not with "
                        "--predictions; leave out --onnx")
    _check_outputs(args)
    if args.predictions is None:
        check_model_path(args.model)
    with OutputLock(out, "evaluate"):  # a second evaluate into the same file is refused until this one ends
        _check_outputs(args)  # unchanged since the lock
        return _evaluate(args)


def _pr_curve_path(out: Path) -> Path:
    return out.with_name(out.stem + "_pr_curve.png")


def _earlier_pr_curve(out: Path, pr_path: Path) -> bool:
    """Whether ``pr_path`` is the PR curve the earlier results ``out`` wrote (its SHA-256 is in their ``meta``)."""
    from bafenet.outputs import file_sha256

    if not (out.is_file() and _earlier_results(out)):
        return False
    recorded = json.loads(out.read_text())["meta"].get("pr_curve_sha256")
    return recorded is None or recorded == file_sha256(pr_path)  # None: written before hashes were kept


def _check_outputs(args: argparse.Namespace) -> None:
    """``--out`` and its PR curve: not an input, not inside one; replaced only when ours or with ``--overwrite``."""
    from bafenet.outputs import check_output_file

    out, pr_path = args.out, _pr_curve_path(args.out)
    inputs = [args.model, args.predictions, args.dataset, args.onnx]
    check_output_file(out, inputs=inputs, overwrite=args.overwrite, ours=_earlier_results)
    check_output_file(pr_path, inputs=inputs, overwrite=args.overwrite, option="--out (PR curve)",
                      ours=lambda path: _earlier_pr_curve(out, path))


def _evaluate(args: argparse.Namespace) -> int:
    """Score the model or predictions and write ``--out`` and its PR curve (the checks are done)."""
    import datasets
    import transformers

    from bafenet import __version__
    from bafenet.outputs import file_sha256, written_file

    out, pr_path = args.out, _pr_curve_path(args.out)
    source_path = args.model if args.predictions is None else args.predictions
    started = time.time()
    network = None if args.predictions is not None else _load_network(args)  # a bad --onnx fails before the data
    dataset = datasets.load_dataset(str(args.dataset), args.config, split=args.split)
    if network is None:
        results, device = _predictions_results(args, dataset), None
        source = {"model": None, "predictions": str(args.predictions)}
    else:
        results, device = _model_results(args, network, dataset)
        source = {"model": str(args.model), "onnx": None if args.onnx is None else str(args.onnx),
                  "revision": args.revision, "batch_size": args.batch_size,
                  "operating_threshold_source": args.operating_threshold_source}
    detections = results.pop("detections")
    conv = results.pop("conventions")
    results["meta"] = {
        **source, "dataset": str(args.dataset), "config": args.config, "split": args.split, "device": device,
        "seconds": round(time.time() - started, 1), "bafenet": __version__, "transformers": transformers.__version__,
        "datasets": datasets.__version__, "python": platform.python_version(),
    }
    results["conventions"] = conv
    results["detections"] = detections
    ground_truths = split_ground_truths(dataset)
    with written_file(pr_path) as tmp:
        write_pr_curve(detections, ground_truths, tmp, results, args.iou_threshold, args.legacy_plus_one,
                       title=f"{Path(str(source_path)).name} on {args.config}/{args.split}")
    results["meta"]["pr_curve"] = pr_path.name
    results["meta"]["pr_curve_sha256"] = file_sha256(pr_path)
    with written_file(out) as tmp:
        tmp.write_text(results_to_json(results))
    print(format_summary(results))
    print(f"wrote {out} and {pr_path}")
    return 0
