"""Inference latency of BAFE-Net R18/R50 against torchvision FCOS-R50, side by side in one process.

    python benchmarks/bench_inference.py [--size 512] [--repeats 15] [--threads N] [--backbones resnet18 resnet50]

Batch 1, one 512x512 grey uint8 image, random weights for every model (no download). Each measurement is the whole
user-facing path:

- BAFE-Net: ``processor(images)`` (resize + normalise) -> ``model(pixel_values)`` -> ``post_process_object_detection``
  (threshold 0.05, NMS, rescale to the image size);
- FCOS: uint8 -> float tensor -> ``fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=1,
  min_size=size, max_size=size, score_thresh=0.05, nms_thresh=0.5)`` whose forward normalises, runs the network and
  post-processes (so it sees the same 512x512 input and the same score threshold / NMS IoU as BAFE-Net).

The candidates run interleaved (A, B, C, A, B, C, ...; the order rotates every round) after a warm-up, and the
median of each is reported with the ratio to FCOS-R50: a ratio measured this way holds on a shared, noisy machine.
Goal: BAFE-Net R18 <= 1.15x FCOS-R50.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

GOAL_R18_VS_FCOS = 1.15


def interleaved_median(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, interleaved (rotating order per round); returns the seconds per run."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def report(times: dict[str, list[float]], reference: str, title: str) -> dict[str, float]:
    """Print a table (median, IQR, ratio of medians to ``reference``); return the medians in ms."""
    medians = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    width = max(len(name) for name in times) + 2
    print(f"\n{title}")
    print(f"{'model':<{width}} {'median ms':>10} {'IQR ms':>14}   x {reference}")
    for name, values in times.items():
        q1, _, q3 = (1e3 * q for q in statistics.quantiles(values, n=4)) if len(values) > 1 else (0, 0, 0)
        ratio = medians[name] / medians[reference]
        print(f"{name:<{width}} {medians[name]:>10.1f} {f'{q1:.0f}-{q3:.0f}':>14}   {ratio:.3f}")
    return medians


PEER = "FCOS-R50 (torchvision)"


def timing_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark shares: --size, --repeats, --warmup, --threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    return parser


def start(args: argparse.Namespace) -> None:
    """Apply --threads, flush denormal floats to zero (as the `bafenet` commands do: a trained model's activations
    hold denormals that slow CPU arithmetic several times) and print where the numbers come from."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(machine_line())


def compare_with_peer(candidates: dict[str, Callable[[], object]], args: argparse.Namespace, title: str,
                      goal: float) -> None:
    """Time the candidates (one of them `PEER`) interleaved, print the table and whether BAFE-Net R18 met ``goal``."""
    medians = report(interleaved_median(candidates, args.repeats, args.warmup), PEER,
                     f"{title}, {args.repeats} interleaved repeats")
    if "BAFE-Net R18" in medians:
        ratio = medians["BAFE-Net R18"] / medians[PEER]
        print(f"\ngoal BAFE-Net R18 <= {goal}x FCOS-R50: {ratio:.3f}x ({'met' if ratio <= goal else 'MISSED'})")


def bafenet_full_path(model: torch.nn.Module, processor: object, pil_image: object) -> Callable[[], object]:
    """What a user runs for one image: image processor -> network -> post-processing (threshold 0.05)."""
    target_sizes = [(pil_image.height, pil_image.width)]

    def predict() -> object:
        with torch.inference_mode():
            inputs = processor(images=[pil_image], return_tensors="pt")
            outputs = model(**inputs)  # pixel_values (+ image_sizes in the tiles input mode)
            return processor.post_process_object_detection(outputs, threshold=0.05, target_sizes=target_sizes)

    return predict


def machine_line() -> str:
    """One line describing where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"load average {load:.1f} at start")


def fcos_peer(size: int) -> torch.nn.Module:
    """torchvision FCOS-R50 (5 FPN levels), random weights, configured to see the same input as BAFE-Net."""
    from torchvision.models.detection import fcos_resnet50_fpn

    return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=1, min_size=size, max_size=size,
                             score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)


def bafenet_model(backbone: str, size: int) -> tuple[torch.nn.Module, object]:
    """A randomly initialised full-size BAFE-Net (256-channel FPN/head, 4 tower convs) and its image processor."""
    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

    torch.manual_seed(0)
    model = BafeNetForObjectDetection(BafeNetConfig(backbone=backbone, image_size=size)).eval()
    return model, BafeNetImageProcessor(size={"height": size, "width": size})


def recipe_model(name: str = "cpu") -> tuple[torch.nn.Module, object]:
    """The architecture of training recipe ``name`` (``bafenet.training.RECIPES``), random weights (the speed does
    not depend on them), and its image processor."""
    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor
    from bafenet.training import RECIPES, parse_config_overrides

    recipe = RECIPES[name]
    torch.manual_seed(0)
    config = BafeNetConfig.improved(backbone=recipe["backbone"], image_size=recipe["image_size"],
                                    **parse_config_overrides(recipe["config_overrides"]))
    return BafeNetForObjectDetection(config).eval(), BafeNetImageProcessor.from_model_config(config)


def test_image(size: int) -> np.ndarray:
    """A 512x512 grey uint8 image: a real DenseSIRST image when the devkit is present, else smooth noise."""
    from PIL import Image

    root = os.environ.get("DENSESIRST_DEVKIT", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                            "DenseSIRST", "data", "SIRSTdevkit"))
    path = os.path.join(root, "PNGImages", "202105-Enhance-1.png")
    if os.path.isfile(path):
        return np.array(Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR))
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(100, 30, (size, size)), 0, 255).astype(np.uint8)


def main() -> None:
    parser = timing_parser(__doc__, repeats=15)
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    args = parser.parse_args()
    start(args)

    from PIL import Image

    image = test_image(args.size)
    pil_image = Image.fromarray(image, mode="L")
    candidates: dict[str, Callable[[], object]] = {}
    for backbone in args.backbones:
        model, processor = bafenet_model(backbone, args.size)
        candidates[f"BAFE-Net {backbone.replace('resnet', 'R')}"] = bafenet_full_path(model, processor, pil_image)

    peer = fcos_peer(args.size).eval()

    def fcos_predict():
        with torch.inference_mode():
            tensor = torch.from_numpy(image).float().div_(255.0).expand(3, -1, -1)
            return peer([tensor])

    candidates[PEER] = fcos_predict
    compare_with_peer(candidates, args, f"inference, batch 1, {args.size}x{args.size}, pre + network + "
                      "post-processing", GOAL_R18_VS_FCOS)


if __name__ == "__main__":
    main()
