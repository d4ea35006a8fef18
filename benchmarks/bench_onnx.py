"""ONNX Runtime vs PyTorch inference for BAFE-Net, side by side in one process.

    python benchmarks/bench_onnx.py [--backbone resnet18] [--size 512] [--repeats 15]

Exports a randomly initialised full-size BAFE-Net with :func:`bafenet.export_onnx.export_onnx` (TorchScript
exporter, opset 17) to a temporary file, then times batch-1 inference at 512x512, interleaved with a rotating order:

- the dense network alone (``pixel_values`` -> logits, boxes, centerness, sky logits): ORT session vs PyTorch
  ``inference_mode``;
- the whole path (image processor -> network -> ``post_process_object_detection``), as ``bafenet predict`` runs it
  with and without ``--onnx``.

onnxruntime gets as many intra-op threads as torch (``torch.get_num_threads()``) and all graph optimisations.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from bench_inference import (
    bafenet_full_path, bafenet_model, interleaved_median, report, start, test_image, timing_parser,
)

from bafenet.export_onnx import OUTPUT_NAMES, compare_with_pytorch, export_onnx, outputs_from_onnx


def main() -> None:
    parser = timing_parser(__doc__, repeats=15)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    start(args)

    import onnxruntime as ort
    from PIL import Image

    model, processor = bafenet_model(args.backbone, args.size)
    pil_image = Image.fromarray(test_image(args.size), mode="L")
    target_sizes = [(args.size, args.size)]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "bafenet.onnx")
        diffs = compare_with_pytorch(model, path, batch_size=1)
        print(f"exported {args.backbone} -> ONNX ({path.stat().st_size / 2**20:.1f} MiB); max |diff| vs PyTorch: "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    pixel_values = processor(images=[pil_image], return_tensors="pt")["pixel_values"]
    pixel_numpy = pixel_values.numpy()

    def torch_dense():
        with torch.inference_mode():
            return model(pixel_values=pixel_values)

    def onnx_dense():
        return session.run(list(OUTPUT_NAMES), {"pixel_values": pixel_numpy})

    def onnx_full():
        inputs = processor(images=[pil_image], return_tensors="pt")
        arrays = session.run(list(OUTPUT_NAMES), {"pixel_values": inputs["pixel_values"].numpy()})
        outputs = outputs_from_onnx(arrays, tuple(inputs["pixel_values"].shape))
        return processor.post_process_object_detection(outputs, threshold=0.05, target_sizes=target_sizes)

    name = f"BAFE-Net {args.backbone.replace('resnet', 'R')}"
    candidates: dict[str, Callable[[], object]] = {
        f"{name} PyTorch, network": torch_dense,
        f"{name} ONNX Runtime, network": onnx_dense,
        f"{name} PyTorch, pre+net+post": bafenet_full_path(model, processor, pil_image),
        f"{name} ONNX Runtime, pre+net+post": onnx_full,
    }
    times = interleaved_median(candidates, args.repeats, args.warmup)
    medians = report({k: times[k] for k in list(candidates)[:2]}, f"{name} PyTorch, network",
                     f"dense network, batch 1, {args.size}x{args.size}, {args.repeats} interleaved repeats")
    medians |= report({k: times[k] for k in list(candidates)[2:]}, f"{name} PyTorch, pre+net+post",
                      "whole path (image processor + network + post-processing)")
    speedup = medians[f"{name} PyTorch, network"] / medians[f"{name} ONNX Runtime, network"]
    print(f"\nONNX Runtime speed-up over PyTorch (network): {speedup:.2f}x")


if __name__ == "__main__":
    main()
