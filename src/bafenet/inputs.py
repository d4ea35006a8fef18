"""Checks on what a user hands a command (a model folder, a path), so a bad one fails in one line naming the file.

Loading a broken ``save_pretrained`` folder through transformers ends in a traceback that does not name the file
("Repo id must be in the form ..." for a missing local path, a safetensors header error for a truncated file);
`check_model_path` runs first and names the file and the fix.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .outputs import UserError

__all__ = ["looks_local", "check_model_path", "add_deprecated_alias"]


def looks_local(text: str) -> bool:
    """Whether ``text`` names a local path rather than a Hub repo id (``owner/name``)."""
    path = Path(text).expanduser()
    return (path.exists() or text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or text.endswith("/")
            or (text.count("/") == 1 and path.parent.is_dir()))


def check_model_path(model: str | Path, option: str = "--model") -> None:
    """Refuse a local model folder that is missing or whose ``config.json`` / ``*.safetensors`` cannot be read (a
    folder with pickled ``*.bin`` weights only is refused: nothing is unpickled).

    A Hub repo id (``owner/name`` that is not a local folder) is left to transformers.
    """
    text = str(model)
    path = Path(text).expanduser()
    if not looks_local(text):
        return
    if not path.exists():
        raise UserError(f"{option} {text}: no such model folder (a Hub repo id looks like 'owner/name'); pass the "
                        "folder written by `bafenet train` or save_pretrained")
    if not path.is_dir():
        raise UserError(f"{option} {text}: is a file; pass the model folder that holds config.json and "
                        "model.safetensors")
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{config}: missing; {option} must be a folder written by save_pretrained")
    try:
        parsed = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{config}: not valid JSON ({error}); restore the file from the model's source") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{config}: not a model config (a JSON object); restore the file from the model's source")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.glob("*.bin"))
        found = f" ({', '.join(pickles)} is a pickle, which bafenet never loads)" if pickles else ""
        raise UserError(f"{path}: no model.safetensors{found}; {option} must be a folder written by save_pretrained "
                        "(safe_serialization)")
    from safetensors import safe_open

    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # reads every header entry; a truncated file fails here
                    handle.get_slice(key)
            size, expected = file.stat().st_size, _safetensors_size(file)
        except Exception as error:  # safetensors raises its own SafetensorError (not an OSError)
            raise UserError(f"{file}: corrupt safetensors file ({' '.join(str(error).split())}); restore it from the "
                            "model's source") from None
        if size < expected:
            raise UserError(f"{file}: truncated ({size} of {expected} bytes); restore it from the model's source")


def _safetensors_size(file: Path) -> int:
    """The size a safetensors file must have: 8 + header length + the end of the last tensor's data."""
    with open(file, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0)


class _DeprecatedAlias(argparse.Action):
    """Store the value like ``store`` and print one warning line naming the new flag (``new``)."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new} (same meaning)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: Any, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept ``old`` (a former flag) as ``new``: it stores into ``dest`` and prints one warning line on stderr.
    ``parser``: an `argparse.ArgumentParser` or one of its argument groups."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)
