"""``bafenet metric export``: write the generated VOC ``evaluate`` module (`bafenet.metrics.evaluate_module`) into a
folder, marked as bafenet's output (`bafenet.outputs`).

    bafenet metric export --out densesirst_voc     # densesirst_voc/densesirst_voc.py, README.md, app.py, ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .metrics.evaluate_module import check_module_name, evaluate_module_files
from .outputs import MARKER, replaced_dir

__all__ = ["COMMAND", "add_arguments", "run", "write_evaluate_module"]

COMMAND = "metric export"


def write_evaluate_module(out: str | Path, overwrite: bool = False) -> Path:
    """Write the module into the folder ``out`` (script ``<folder name>.py``) and return ``out``; then
    ``evaluate.load(str(out))`` loads it.

    ``out`` must be new, empty or an earlier output of ``bafenet metric export`` (replaced; with ``overwrite`` even
    when files were added since); any other folder is refused (`bafenet.outputs`).
    """
    out = Path(out).expanduser()
    files = evaluate_module_files(check_module_name(out.resolve().name, given=out))
    with replaced_dir(out, COMMAND, overwrite=overwrite) as tmp:
        for file_name, text in files.items():
            (tmp / file_name).write_text(text, encoding="utf-8")
    return out


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
