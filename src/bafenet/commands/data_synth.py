"""``bafenet data synth``: the command line of `bafenet.data.synthetic`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bafenet.data.synthetic import write_synthetic_devkit

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="devkit folder to write (e.g. synthetic/SIRSTdevkit)")
    parser.add_argument("--num-images", type=int, default=16, help="number of images (>= 4; default 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; output is byte-identical per seed")
    parser.add_argument("--overwrite", action="store_true",
                        help="also replace an earlier synthetic devkit to which files were added (never a real one)")


def run(args: argparse.Namespace) -> int:
    root = write_synthetic_devkit(args.out, num_images=args.num_images, seed=args.seed, overwrite=args.overwrite)
    from bafenet.data.devkit import SirstDevkit

    devkit = SirstDevkit(root)
    ids = devkit.split_ids("trainval_v2") + devkit.split_ids("test_v2")
    num_targets = sum(len(devkit.read_encoded(i).boxes) for i in ids)
    print(f"wrote a synthetic SIRSTdevkit to {root}: {len(ids)} images, {num_targets} targets, "
          f"splits {', '.join(devkit.split_names())}")
    return 0
