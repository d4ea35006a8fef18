"""``bafenet quickstart``: the command line of `bafenet.quickstart`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bafenet.quickstart import QuickstartSettings, run_quickstart

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bafenet-quickstart"),
                        help="output folder (default: ./bafenet-quickstart; a previous quickstart there is replaced)")
    parser.add_argument("--fast", action="store_true",
                        help="smoke-test size: 12 images, tiny 128x128 model, 2 training updates (~30 s)")
    parser.add_argument("--num-images", type=int, default=None, help="synthetic images (default 64; --fast: 12)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the devkit and the training (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="also replace an earlier quickstart folder to which files were added")


def run(args: argparse.Namespace) -> int:
    settings = QuickstartSettings.fast() if args.fast else QuickstartSettings()
    overrides = {k: v for k, v in (("num_images", args.num_images), ("epochs", args.epochs), ("seed", args.seed))
                 if v is not None}
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    try:
        run_quickstart(args.out, settings, overwrite=args.overwrite)
    except RuntimeError as error:
        print(f"bafenet quickstart: error: {error}", file=sys.stderr)
        return 1
    return 0
