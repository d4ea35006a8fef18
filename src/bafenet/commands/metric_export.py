"""``bafenet metric export``: the command line of `bafenet.metric_export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bafenet.metric_export import write_evaluate_module
from bafenet.outputs import MARKER

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("The script is named after the folder, as evaluate.load expects: --out densesirst_voc writes "
                     "densesirst_voc/densesirst_voc.py, loaded with evaluate.load('./densesirst_voc').")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder to write (new, empty or an earlier `bafenet metric export` output)")
    parser.add_argument("--overwrite", action="store_true",
                        help="also replace an earlier export to which files were added (never another folder)")


def run(args: argparse.Namespace) -> int:
    out = write_evaluate_module(args.out, overwrite=args.overwrite)
    written = sorted(p.name for p in out.iterdir() if p.name != MARKER)
    path = str(out) if out.is_absolute() or str(out).startswith(".") else f"./{out}"
    print(f"wrote {', '.join(written)} to {out}; load it with evaluate.load({path!r})")
    return 0
