"""``bafenet metric export``: write the generated VOC ``evaluate`` module (`bafenet.metrics.evaluate_module`) into a
folder, marked as bafenet's output (`bafenet.outputs`).

    bafenet metric export --out densesirst_voc     # densesirst_voc/densesirst_voc.py, README.md, app.py, ...
"""

from __future__ import annotations

from pathlib import Path

from .metrics.evaluate_module import check_module_name, evaluate_module_files
from .outputs import replaced_dir

__all__ = ["COMMAND", "write_evaluate_module"]

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
