"""How inference cost grows with image area: the paper's 512x512 resize against the tiles input mode.

    python benchmarks/bench_tiles_cost.py [--repeats 3] [--threads N]

For each DenseSIRST frame size (320x256, 640x512, 1280x1024, 1918x1080), the whole user-facing path of one image
(processor -> model -> post-processing, batch 1, random weights: the cost does not depend on them) is timed for

- the default model (R18, `input_mode="resize"`: every image becomes one 512x512 pass, whatever its size) and
- the `--recipe cpu-tiles` model (Lite0, FPN 64, `input_mode="tiles"`, scale 2.5, 256 px windows, overlap 64),

interleaved in one process. The table gives each one's milliseconds, the windows the tiles mode runs, and the tiles
mode's milliseconds per original megapixel (constant when the cost is proportional to area).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_inference import (bafenet_full_path, bafenet_model, interleaved_median, recipe_model, start,  # noqa: E402
                             timing_parser)

SIZES = ((256, 320), (512, 640), (1024, 1280), (1080, 1918))  # (height, width)


def main() -> None:
    from PIL import Image

    from bafenet.models.bafenet.configuration_bafenet import scaled_size, window_starts

    args = timing_parser(__doc__, repeats=3).parse_args()
    start(args)
    default, default_processor = bafenet_model("resnet18", 512)
    tiles, tiles_processor = recipe_model("cpu-tiles")
    config = tiles.config
    rows = []
    for height, width in SIZES:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8), mode="L")
        times = interleaved_median({"resize": bafenet_full_path(default, default_processor, image),
                                    "tiles": bafenet_full_path(tiles, tiles_processor, image)}, args.repeats, 1)
        sh, sw = scaled_size(height, width, config.tile_scale)
        windows = len(window_starts(sh, config.tile_window, config.tile_overlap)) * len(
            window_starts(sw, config.tile_window, config.tile_overlap))
        medians = {name: 1e3 * float(np.median(values)) for name, values in times.items()}
        rows.append((f"{width}x{height}", medians["resize"], medians["tiles"], windows,
                     medians["tiles"] / (height * width / 1e6)))
    print(f"\n{'frame':>10} {'resize 512 ms':>14} {'tiles ms':>10} {'windows':>8} {'tiles ms/MP':>12}")
    for frame, resize_ms, tiles_ms, windows, per_mp in rows:
        print(f"{frame:>10} {resize_ms:>14.0f} {tiles_ms:>10.0f} {windows:>8} {per_mp:>12.0f}")


if __name__ == "__main__":
    main()
