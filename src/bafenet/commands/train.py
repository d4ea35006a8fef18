"""``bafenet train`` and ``train_accelerate.py``: parse the options, train, turn errors into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bafenet.training import NonFiniteLossError, add_arguments, arguments_from_namespace, build_parser, train

__all__ = ["add_arguments", "run", "main"]


def run(namespace: argparse.Namespace) -> int:
    """``bafenet train``: train, print where the model went; exit code 1 on a non-finite loss. User errors propagate
    to `bafenet.cli` (one line)."""
    try:
        args = arguments_from_namespace(namespace)
    except ValueError as error:
        print(f"bafenet train: error: {error}", file=sys.stderr)
        return 2
    try:
        train(args)
    except NonFiniteLossError as error:
        print(f"bafenet train: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train_accelerate.py``: user errors end in one line on stderr and exit status 1."""
    from bafenet.outputs import UserError, error_line

    parser = build_parser()
    try:
        return run(parser.parse_args(argv))
    except (UserError, OSError, ValueError) as error:
        print(f"train_accelerate.py: error: {error_line(error)}", file=sys.stderr)
        return 1
