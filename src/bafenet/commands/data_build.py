"""``bafenet data build``: the command line of `bafenet.data.build`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bafenet.data.build import build_dataset
from bafenet.data.densesirst import CONFIG_SPLITS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devkit", required=True, type=Path, help="the SIRSTdevkit folder")
    parser.add_argument("--out", default=Path("densesirst"), type=Path,
                        help="dataset folder to write (default: densesirst, so load_dataset('densesirst') finds it)")
    parser.add_argument("--num-proc", type=int, default=1, help="processes reading and validating images (default 1)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out images missing from PNGImages/ (the log and the card list them) "
                        "instead of failing")
    parser.add_argument("--config", dest="configs", action="append", choices=list(CONFIG_SPLITS),
                        help="build only this config (repeatable; default: all)")
    parser.add_argument("--split", dest="splits", action="append", choices=["train", "validation", "test"],
                        help="build only this split (repeatable; default: all)")
    parser.add_argument("--no-stats", dest="stats", action="store_false", help="no statistics section in the card")
    parser.add_argument("--overwrite", action="store_true",
                        help="also replace an earlier build to which files were added (never a folder bafenet did "
                        "not write)")


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bafenet").setLevel(logging.INFO)
    out = build_dataset(args.devkit, args.out, num_proc=args.num_proc, skip_missing=args.skip_missing,
                        configs=args.configs, splits=args.splits, stats=args.stats, overwrite=args.overwrite)
    print(f"done: load it with datasets.load_dataset({str(out)!r}) "
          f"(or load_dataset({out.name!r}) from {out.resolve().parent})")
    return 0
