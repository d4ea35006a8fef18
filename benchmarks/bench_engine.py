"""Engine-level levers of the windowed inference on a trained model, one frame, interleaved in one process.

    python benchmarks/bench_engine.py --model DIR --dataset DIR [--frame 1280x1024] [--threads 2] [--repeats 3]

For one real frame of the given size from the dataset's test split, the whole path (processor -> model ->
post-processing) of the model as saved (zoom or tiles mode) is timed with:

- denormal floats kept (PyTorch's default) or flushed to zero (what every `bafenet` command does);
- `tile_batch_size` 4 / 8 (the default) / 16 windows per forward pass;
- the ONNX graph in onnxruntime (`bafenet predict --onnx`), same windows and stitching;
- that graph quantised to int8 (onnxruntime static quantisation, QDQ, per-channel weights, calibrated on the inputs the
  frame's own passes feed the network, convolutions only; ``--int8-out FILE`` keeps it, for scoring with `bafenet
  evaluate --onnx`), with the share of the fp32 detections (>= 0.05) it keeps;

and the share of the stitching (`tiling_bafenet.stitch_windows`) in the PyTorch path. Medians, ratios to the default.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_inference import bafenet_full_path, interleaved_median, report, start, timing_parser  # noqa: E402


def frame(dataset: str, size: str):
    """The first test image of ``size`` (WxH) as a grey PIL image."""
    import datasets

    width, height = (int(v) for v in size.split("x"))
    rows = datasets.load_dataset(dataset, split="test")
    sizes = rows.select_columns(["width", "height"])
    index = next(i for i, r in enumerate(sizes) if (r["width"], r["height"]) == (width, height))
    return rows[index]["image"].convert("L")


def flushing(path, flush: bool):
    """``path`` run with denormals flushed (or kept), restoring the flushing setting afterwards."""
    def run() -> object:
        torch.set_flush_denormal(flush)
        try:
            return path()
        finally:
            torch.set_flush_denormal(True)

    return run


class RecordingSession:
    """An onnxruntime session that keeps every input it is fed (the calibration data of the int8 graph)."""

    def __init__(self, session) -> None:
        self.session, self.feeds = session, []

    def run(self, names, feeds):
        self.feeds.append(feeds)
        return self.session.run(names, feeds)


def onnx_path(model, processor, image, session=None):
    """The `bafenet predict --onnx` path: the exported window network in onnxruntime (or ``session``), the model's
    windows."""
    import onnxruntime

    from bafenet.export_onnx import export_onnx, run_onnx

    if session is None:
        session = onnxruntime.InferenceSession(str(export_onnx(model, Path(tempfile.mkdtemp()) / "model.onnx")),
                                               providers=["CPUExecutionProvider"])
    sizes = [(image.height, image.width)]

    def run() -> object:
        with torch.inference_mode():
            outputs = run_onnx(session, processor(images=[image], return_tensors="pt"), model.config)
            return processor.post_process_object_detection(outputs, threshold=0.05, target_sizes=sizes)

    return run


def int8_session(model, processor, image, out: Path | None):
    """The exported graph quantised to int8 (static, QDQ, per-channel), calibrated on the inputs one pass of the
    frame feeds it (coarse and sky passes, windows); saved to ``out`` when given."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from bafenet.export_onnx import export_onnx

    folder = Path(tempfile.mkdtemp())
    fp32 = export_onnx(model, folder / "model.onnx")
    recording = RecordingSession(onnxruntime.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]))
    onnx_path(model, processor, image, recording)()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(recording.feeds)

        def get_next(self):
            return next(self.feeds, None)

    out = out or folder / "model_int8.onnx"
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["Conv"],  # only the convolutions: the shape arithmetic stays exact
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def kept_share(reference, candidate, iou: float = 0.5) -> float:
    """The share of ``reference`` detections (post-processed, one image) that ``candidate`` also reports (a box of
    the same label at IoU >= ``iou``)."""
    from torchvision.ops import box_iou

    ref, cand = reference[0], candidate[0]
    if len(ref["boxes"]) == 0:
        return 1.0
    if len(cand["boxes"]) == 0:
        return 0.0
    same = ref["labels"][:, None] == cand["labels"][None, :]
    return float(((box_iou(ref["boxes"], cand["boxes"]) >= iou) & same).any(1).float().mean())


def stitch_share(model, processor, image, repeats: int) -> float:
    """Fraction of the PyTorch path's time spent in `stitch_windows`."""
    from bafenet.models.bafenet import tiling_bafenet

    original, spent = tiling_bafenet.stitch_windows, []

    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    tiling_bafenet.stitch_windows = timed
    try:
        path, total = bafenet_full_path(model, processor, image), 0.0
        for _ in range(repeats):
            began = time.perf_counter()
            path()
            total += time.perf_counter() - began
    finally:
        tiling_bafenet.stitch_windows = original
    return sum(spent) / total


def main() -> None:
    from bafenet.models.bafenet import BafeNetForObjectDetection, BafeNetImageProcessor

    parser = timing_parser(__doc__, repeats=3)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--frame", default="1280x1024")
    parser.add_argument("--int8-out", type=Path, default=None, help="keep the int8 ONNX graph at this path")
    args = parser.parse_args()
    start(args)
    model = BafeNetForObjectDetection.from_pretrained(args.model).eval()
    processor = BafeNetImageProcessor.from_pretrained(args.model)
    image = frame(args.dataset, args.frame)
    candidates = {"default (flush, batch 8)": bafenet_full_path(model, processor, image),
                  "denormals kept": flushing(bafenet_full_path(model, processor, image), False)}
    for batch in (4, 16):
        variant = copy.deepcopy(model)
        variant.config.tile_batch_size = batch
        candidates[f"tile_batch_size {batch}"] = bafenet_full_path(variant, processor, image)
    candidates["onnxruntime"] = onnx_path(model, processor, image)
    candidates["onnxruntime int8"] = onnx_path(model, processor, image, int8_session(model, processor, image,
                                                                                     args.int8_out))
    report(interleaved_median(candidates, args.repeats, 1), "default (flush, batch 8)",
           f"{args.frame} frame, {model.config.input_mode} mode, {torch.get_num_threads()} threads, "
           f"{args.repeats} interleaved repeats")
    print(f"\nstitching: {100 * stitch_share(model, processor, image, args.repeats):.1f} % of the PyTorch path")
    reference = candidates["onnxruntime"]()
    print(f"int8 keeps {100 * kept_share(reference, candidates['onnxruntime int8']()):.1f} % of the fp32 ONNX "
          f"detections (>= 0.05, IoU >= 0.5, {len(reference[0]['boxes'])} of them) on this frame")


if __name__ == "__main__":
    main()
