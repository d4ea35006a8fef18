"""Files that make a model card show what the model does, pushed with the model (``bafenet push``):

- ``card/overlay.png`` (``--card-image FRAME``): the model's detections on one real frame, drawn by
  :func:`bafenet.visualize.draw_detections` at the model's operating point (boxes, tinted sky, zoomed densest cluster);
- ``card/latency.json`` (``--card-latency``): the time per frame of the model for a few frame sizes, measured here,
  in this process, with the number of torch threads, the CPU and the versions recorded beside the numbers.

Both are generated at push time from the model folder (nothing in the folder changes) and linked from the card by
relative paths, so they render on the Hub and in a local copy of the repo alike.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LATENCY_FILE", "LATENCY_SIZES", "OVERLAY_FILE", "measure_latency", "overlay_png"]

OVERLAY_FILE = "card/overlay.png"
LATENCY_FILE = "card/latency.json"
LATENCY_SIZES = ((320, 256), (640, 512), (1280, 1024), (1918, 1080))  # (width, height): DenseSIRST's frame sizes


def overlay_png(model_dir: str | Path, image_path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """The overlay of the model's detections on ``image_path`` as PNG bytes, and what it shows (for the caption)."""
    from .predict import Predictor, load_grey_image
    from .visualize import draw_detections

    predictor = Predictor(model_dir, device="cpu")
    image = load_grey_image(image_path)
    found = predictor([image], sky=True)[0]
    name = Path(image_path).name
    title = f"{name}: {len(found.boxes)} detections >= {predictor.operating_threshold:.2f}"
    buffer = io.BytesIO()
    draw_detections(image, found.boxes, found.scores, sky_mask=found.sky_mask, title=title).save(buffer, "PNG")
    info = {"image": name, "width": image.width, "height": image.height, "detections": len(found.boxes),
            "operating_threshold": predictor.operating_threshold}
    return buffer.getvalue(), info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_latency(model_dir: str | Path, sizes: Sequence[tuple[int, int]] = LATENCY_SIZES, repeats: int = 3,
                    threads: int | None = None) -> dict[str, Any]:
    """Seconds per frame (pre-processing, network, post-processing) of the model for each (width, height) of
    ``sizes``: one warm-up, then the median of ``repeats`` runs on a random grey frame, CPU, batch 1, ``threads``
    torch threads (default: torch's current setting). Returns the JSON written as ``card/latency.json``."""
    import torch
    from PIL import Image

    from . import __version__
    from .predict import Predictor

    predictor = Predictor(model_dir, device="cpu")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        rng = np.random.default_rng(0)
        for width, height in sizes:
            frame = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L")
            predictor([frame])  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                predictor([frame])
                times.append(time.perf_counter() - start)
            rows.append({"width": width, "height": height, "median_ms": round(1000 * statistics.median(times), 1),
                         "runs": repeats})
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return {
        "frames": rows,
        "measured": {"what": "pre-processing + network + post-processing, batch 1, float32, CPU; median of runs "
                             "after one warm-up, random grey frames",
                     "torch_threads": used_threads, "cpu": _cpu_name(), "machine": platform.machine(),
                     "torch": torch.__version__, "bafenet": __version__,
                     "input_mode": getattr(predictor.config, "input_mode", None),
                     "date": time.strftime("%Y-%m-%d")},
    }


def latency_json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode("utf-8")
