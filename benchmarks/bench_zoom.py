"""Zoom against full tiles on a trained model: whole-path latency per frame size beside torchvision FCOS-R50 at 512²
(one process), the windows each runs, and the coarse pass's proposal recall on a split.

    python benchmarks/bench_zoom.py --model DIR --dataset DIR [--split validation] [--threads 2] [--repeats 3]
                                    [--max-images N]

``--model`` is a trained zoom-mode model (``bafenet train --recipe cpu-zoom``); the same weights in tiles mode
(``input_mode="tiles"``: every window of the x``tile_scale`` image) are the full-tiles peer, so the two differ only
in which windows run. ``--dataset`` is a built dataset folder (``bafenet data build``).

1. Latency: for one image of each frame size in the split (the first of each width x height), the whole user path
   (processor -> model -> post-processing at 0.05) of zoom, tiles and FCOS-R50 (random weights, resized to 512²,
   the same threshold and NMS; its cost does not depend on the weights), interleaved, medians; ratios to FCOS-R50.
2. Proposal recall: over the split, the fraction of ground-truth targets whose box centre (at ``tile_scale``) lies in
   the core of a window the zoom mode runs (only that window can report it), and the fraction of windows run; overall
   and per size group, at each ``--thresholds`` x ``--margins`` pair (one coarse pass per image serves them all).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_inference import (PEER, bafenet_full_path, fcos_peer, interleaved_median, start,  # noqa: E402
                             timing_parser)


def load(model_dir: str) -> tuple[dict, dict]:
    """The zoom model and its tiles twin (same weights), each with its processor."""
    from bafenet.models.bafenet import BafeNetForObjectDetection, BafeNetImageProcessor

    zoom = BafeNetForObjectDetection.from_pretrained(model_dir).eval()
    if zoom.config.input_mode != "zoom":
        raise SystemExit(f"--model {model_dir}: input_mode is {zoom.config.input_mode!r}; train one with "
                         "`bafenet train --recipe cpu-zoom`")
    processor = BafeNetImageProcessor.from_pretrained(model_dir)
    tiles = copy.deepcopy(zoom)
    tiles.config.input_mode = "tiles"
    return {"zoom": zoom, "tiles": tiles}, {"zoom": processor, "tiles": processor.with_settings(input_mode="tiles")}


def fcos_path(size: int, image: np.ndarray):
    """FCOS-R50 on one grey image resized to ``size``² inside its own transform (as bench_inference)."""
    peer = fcos_peer(size).eval()
    tensor = torch.from_numpy(image).float().div_(255.0).expand(3, -1, -1)

    def predict() -> object:
        with torch.inference_mode():
            return peer([tensor])

    return predict


FRAMES = ((640, 512), (1280, 720), (1280, 1024), (1918, 1080))  # DenseSIRST's camera frames (width, height)


def frame_rows(rows) -> dict[str, int]:
    """The first row of each DenseSIRST frame size in the split, and of the small (<= 400 px) frames."""
    sizes = rows.select_columns(["width", "height"])
    found: dict[str, int] = {}
    for index, row in enumerate(sizes):
        size = (int(row["width"]), int(row["height"]))
        name = f"{size[0]}x{size[1]}" if size in FRAMES else "small" if max(size) <= 400 else None
        if name is not None and name not in found:
            found[name] = index
    return found


def latency(models: dict, processors: dict, rows, repeats: int):
    """Per frame size: medians of zoom, tiles and FCOS-R50, and the windows each BAFE-Net mode ran (yielded as
    they are measured)."""
    from bafenet.models.bafenet.tiling_bafenet import scaled_size, window_layout

    config = models["zoom"].config
    for name, index in frame_rows(rows).items():
        image = rows[index]["image"].convert("L")
        size = (image.width, image.height)
        candidates = {name: bafenet_full_path(models[name], processors[name], image) for name in models}
        candidates[PEER] = fcos_path(512, np.asarray(image))
        times = interleaved_median(candidates, repeats, 1)
        with torch.inference_mode():
            ran = len(models["zoom"](**processors["zoom"](images=[image])).windows)
        if max(size) <= config.zoom_tiles_up_to and config.zoom_small_pass == "whole":
            ran = "whole"  # a small frame runs in one pass over its whole x2.5 image, no window
        total = len(window_layout([scaled_size(size[1], size[0], config.tile_scale)], config.tile_window,
                                  config.tile_overlap))
        medians = {key: 1e3 * float(np.median(values)) for key, values in times.items()}
        yield {"frame": f"{size[0]}x{size[1]}", **medians, "zoom_windows": ran, "tiles_windows": total}


def coarse_proposals(model, processor, image, thresholds: list[float], margins: list[int]) -> tuple[list, dict]:
    """The windows the zoom mode would run on ``image`` at each (proposal threshold, margin) pair (one coarse pass
    for all of them; `tiling_bafenet` functions as the model calls them), and the image's full window grid."""
    from bafenet.models.bafenet.tiling_bafenet import coarse_candidates, scaled_size, window_layout, zoom_windows

    config = model.config
    inputs = processor(images=[image])
    sizes = [tuple(s) for s in inputs["image_sizes"].tolist()]
    with torch.inference_mode():
        candidates, coarse_sizes = coarse_candidates(model.dense_outputs, inputs["pixel_values"], sizes,
                                                     config.zoom_coarse_scale, config.strides)
    fine = [scaled_size(h, w, config.tile_scale) for h, w in sizes]
    layout = window_layout(fine, config.tile_window, config.tile_overlap)
    chosen = {(t, m): zoom_windows(candidates, sizes, coarse_sizes, fine, window=config.tile_window,
                                   overlap=config.tile_overlap, threshold=t, margin=m,
                                   max_fraction=config.zoom_max_fraction, tiles_up_to=config.zoom_tiles_up_to)
              for t in thresholds for m in margins}
    return layout, chosen


def proposal_recall(model, processor, rows, thresholds: list[float], margins: list[int]) -> dict:
    """Per (threshold, margin) and size group: targets whose centre lies in a core of a window the zoom mode runs, and the
    fraction of windows run."""
    from bafenet.data.transforms import row_boxes
    from bafenet.metrics.breakdown import size_group
    from bafenet.models.bafenet.tiling_bafenet import scaled_size

    config, counts = model.config, {}
    rows = rows.select_columns(["image", "width", "height", "objects"])  # no masks decoded
    for index in range(len(rows)):
        row = rows[index]
        width, height = int(row["width"]), int(row["height"])
        fine = scaled_size(height, width, config.tile_scale)
        layout, chosen = coarse_proposals(model, processor, row["image"].convert("L"), thresholds, margins)
        boxes = row_boxes(row)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 * np.array([fine[1] / width, fine[0] / height])
        for setting, windows in chosen.items():
            cores = np.array([core for *_, core in windows]).reshape(-1, 4)
            inside = ((centres[:, None, 1] >= cores[None, :, 0]) & (centres[:, None, 1] < cores[None, :, 1])
                      & (centres[:, None, 0] >= cores[None, :, 2]) & (centres[:, None, 0] < cores[None, :, 3])).any(1)
            for group in ("all", size_group(width, height)):
                c = counts.setdefault((*setting, group), {"targets": 0, "found": 0, "windows": 0, "ran": 0,
                                                           "images": 0})
                c["targets"] += len(boxes)
                c["found"] += int(inside.sum())
                c["windows"] += len(layout)
                c["ran"] += len(windows)
                c["images"] += 1
    return {key: {"images": c["images"], "targets": c["targets"], "recall": c["found"] / max(c["targets"], 1),
                  "windows_run": c["ran"] / max(c["windows"], 1)} for key, c in counts.items()}


def print_latency(models: dict, processors: dict, rows, repeats: int, split: str) -> None:
    """The latency table, a row per frame size as it is measured."""
    print(f"\nwhole path per frame size ({split}, one image each, {repeats} interleaved repeats, "
          f"{torch.get_num_threads()} threads)")
    print(f"{'frame':>10} {'zoom ms':>9} {'tiles ms':>9} {'FCOS ms':>9} {'zoom/FCOS':>10} {'tiles/FCOS':>11} "
          f"{'windows zoom/tiles':>19}")
    for r in latency(models, processors, rows, repeats):
        print(f"{r['frame']:>10} {r['zoom']:>9.0f} {r['tiles']:>9.0f} {r[PEER]:>9.0f} {r['zoom'] / r[PEER]:>10.2f} "
              f"{r['tiles'] / r[PEER]:>11.2f} {r['zoom_windows']:>10}/{r['tiles_windows']}", flush=True)


def main() -> None:
    import datasets

    parser = timing_parser(__doc__, repeats=3)
    parser.add_argument("--model", required=True, help="a trained zoom-mode model folder")
    parser.add_argument("--dataset", required=True, help="a built dataset folder (bafenet data build)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--max-images", type=int, default=None, help="proposal recall on the first N images only")
    parser.add_argument("--skip-latency", action="store_true", help="only the proposal recall")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None,
                        help="proposal thresholds to measure the recall at (default: the model's zoom_threshold)")
    parser.add_argument("--margins", type=int, nargs="+", default=None,
                        help="proposal margins (fine pixels) to measure the recall at (default: the model's zoom_margin)")
    args = parser.parse_args()
    start(args)
    models, processors = load(args.model)
    args.thresholds = args.thresholds or [models["zoom"].config.zoom_threshold]
    args.margins = args.margins or [models["zoom"].config.zoom_margin]
    rows = datasets.load_dataset(args.dataset, split=args.split)
    if not args.skip_latency:
        print_latency(models, processors, rows, args.repeats, args.split)
    subset = rows if args.max_images is None else rows.select(range(min(args.max_images, len(rows))))
    began = time.perf_counter()
    recall = proposal_recall(models["zoom"], processors["zoom"], subset, args.thresholds, args.margins)
    print(f"\nproposal recall on {args.split} ({len(subset)} images, {time.perf_counter() - began:.0f} s): targets "
          "whose centre lies in a window the zoom mode runs, per proposal threshold and margin (zoom_threshold, zoom_margin)")
    print(f"{'threshold':>10} {'margin':>7} {'group':>8} {'images':>7} {'targets':>8} {'recall':>8} {'windows run':>12}")
    for (threshold, margin, group), r in recall.items():
        print(f"{threshold:>10} {margin:>7} {group:>8} {r['images']:>7} {r['targets']:>8} {r['recall']:>8.4f} "
              f"{r['windows_run']:>12.3f}")


if __name__ == "__main__":
    main()
