"""``bafenet export onnx``: the command line of `bafenet.export_onnx` (export, then compare with PyTorch)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bafenet.export_onnx import DEFAULT_ATOL, DEFAULT_OPSET, OUTPUT_NAMES, compare_with_pytorch, export_onnx
from bafenet.inference import dense_input_size

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own .py files (default: the installed BAFE-Net classes load it)")
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--dynamo", action="store_true", help="use the torch.export-based exporter (needs onnxscript)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help=f"fail when onnxruntime and PyTorch differ by more than this (default {DEFAULT_ATOL:g})")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")


def run(args: argparse.Namespace) -> int:
    from bafenet.inputs import check_model_path
    from bafenet.models.loading import load_model
    from bafenet.outputs import check_output_file, written_file

    start = time.perf_counter()
    path = check_output_file(args.out, inputs=[args.model], overwrite=args.overwrite)
    check_model_path(args.model)
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    with written_file(path) as tmp:
        export_onnx(model, tmp, opset=args.opset, dynamo=args.dynamo)
    size_mb = path.stat().st_size / 2**20
    print(f"exported {args.model} -> {path} ({size_mb:.1f} MiB, opset {args.opset}, "
          f"{'dynamo' if args.dynamo else 'torchscript'} exporter, {time.perf_counter() - start:.1f} s)")
    config = model.config
    height, width = ("height", "width") if config.input_mode == "zoom" else dense_input_size(config)
    print(f"input: pixel_values (batch, 3, {height}, {width}) from the image processor; outputs: "
          f"{', '.join(OUTPUT_NAMES)}; exported for input_mode {config.input_mode}, strides {list(config.strides)} "
          "(recorded in the file's metadata, checked by --onnx)")
    if args.no_check:
        return 0
    diffs = compare_with_pytorch(model, path)
    worst = max(diffs.values())
    print("onnxruntime vs PyTorch, max |diff| (probabilities; boxes / input size): "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    if worst > args.atol:
        print(f"error: {path}: onnxruntime output differs from PyTorch by {worst:.2e} > atol {args.atol:g}",
              file=sys.stderr)
        return 1
    print(f"ok: within atol {args.atol:g}")
    return 0
