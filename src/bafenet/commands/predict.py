"""``bafenet predict``: the command line of `bafenet.predict` (flags, the output folder, ``predictions.json``, exit
status 1 when an input could not be read)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bafenet.evaluation import FALLBACK_OPERATING_THRESHOLD
from bafenet.predict import COMMAND, DEFAULT_MAX_PIXELS, Predictor, collect_inputs, predict_files

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bafenet.inputs import add_deprecated_alias

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own .py files (default: the installed BAFE-Net classes load it)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (predictions.json, overlays/, sky/)")
    parser.add_argument("--operating-threshold", type=float, default=None,
                        help="minimum final detection score drawn and written (default: the model's "
                        "operating_threshold, the best-F1 score on validation stored by training; "
                        f"{FALLBACK_OPERATING_THRESHOLD} without one)")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help="detection cut of the post-processing, on sigmoid(cls) before NMS (default: the image "
                        "processor's detection_threshold, 0.05)")
    add_deprecated_alias(parser, "--threshold", "--operating-threshold", "operating_threshold", type=float)
    parser.add_argument("--onnx", type=Path, default=None,
                        help="run the dense network from this ONNX file in onnxruntime (from `bafenet export onnx`)")
    parser.add_argument("--sky", action="store_true", help="also write the predicted sky mask and tint it in overlays")
    parser.add_argument("--no-draw", action="store_true", help="write predictions.json only, no overlay pictures")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="skip (and report) images larger than this many pixels, before decoding them "
                        f"(default {DEFAULT_MAX_PIXELS:,}, Pillow's limit)")
    parser.add_argument("--overwrite", action="store_true",
                        help="also replace an earlier predict output to which files were added")


def run(args: argparse.Namespace) -> int:
    from bafenet.inputs import check_model_path
    from bafenet.outputs import claim_dir, replaced_dir

    for name in ("operating_threshold", "detection_threshold"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            print(f"error: --{name.replace('_', '-')} must be in [0, 1], got {value}", file=sys.stderr)
            return 2
    if args.max_pixels < 1:
        print(f"error: --max-pixels must be >= 1, got {args.max_pixels}", file=sys.stderr)
        return 2
    inputs = [*args.inputs, args.model, args.onnx]
    claim_dir(args.out, COMMAND, inputs=inputs, overwrite=args.overwrite)  # before loading the model
    check_model_path(args.model)
    paths, problems = collect_inputs(args.inputs, recursive=args.recursive)
    for problem in problems:
        print(f"error: {problem['file']}: {problem['reason']} (skipped)", file=sys.stderr)
    predictor = Predictor(args.model, onnx=args.onnx, operating_threshold=args.operating_threshold,
                          device=args.device, detection_threshold=args.detection_threshold,
                          trust_remote_code=args.trust_remote_code)
    out = Path(args.out)
    with replaced_dir(out, COMMAND, inputs=inputs, overwrite=args.overwrite) as tmp:
        report = predict_files(predictor, paths, tmp, sky=args.sky, draw=not args.no_draw,
                               batch_size=args.batch_size, max_pixels=args.max_pixels)
        report = {"model": str(args.model), "onnx": None if args.onnx is None else str(args.onnx), **report}
        report["errors"] = problems + report["errors"]
        (tmp / "predictions.json").write_text(json.dumps(report, indent=1))
    num_boxes = sum(len(r["boxes"]) for r in report["images"])
    print(f"{len(report['images'])} images, {num_boxes} detections (score >= {predictor.operating_threshold:g}) -> "
          f"{out / 'predictions.json'}")
    if not args.no_draw and report["images"]:
        print(f"overlays -> {out / 'overlays'}")
    if report["errors"]:
        print(f"error: {len(report['errors'])} input(s) could not be read; listed under \"errors\" in "
              f"{out / 'predictions.json'}", file=sys.stderr)
        return 1
    return 0
