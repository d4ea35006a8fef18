"""The ``bafenet`` command line.

Each sub-command is one module of `bafenet.commands` (the command-line glue; the work is done by the library
modules). A module named here exposes ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``. Only the module of the command that is run gets imported, so
``bafenet --help`` stays fast.

User errors (`bafenet.outputs.UserError`, and OSError / ValueError raised on what the user handed us) end in one
line on stderr naming the file or option, exit status 1; ``--debug`` (anywhere on the line) shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .outputs import error_line

# command words -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("quickstart",): ("bafenet.commands.quickstart", "run the whole pipeline on the embedded synthetic devkit"),
    ("data", "synth"): ("bafenet.commands.data_synth", "write a small synthetic SIRSTdevkit"),
    ("data", "build"): ("bafenet.commands.data_build", "build the DenseSIRST Parquet dataset folder from a devkit"),
    ("data", "stats"): ("bafenet.commands.data_stats", "target statistics and plots of a built dataset"),
    ("train",): ("bafenet.commands.train", "train BAFE-Net (same code as train_accelerate.py)"),
    ("evaluate",): ("bafenet.commands.evaluate",
                    "score a model on a dataset split (VOC, COCO, IoU/nIoU/Pd/Fa, points)"),
    ("predict",): ("bafenet.commands.predict", "detect targets in image files and draw them"),
    ("demo",): ("bafenet.commands.demo",
                "web demo (Gradio): upload an infrared image, see the detections (needs bafenet[demo])"),
    ("export", "onnx"): ("bafenet.commands.export_onnx", "export the dense network to ONNX"),
    ("metric", "export"): ("bafenet.commands.metric_export",
                           "write the VOC box metrics as a standalone Hugging Face `evaluate` module folder"),
    ("push",): ("bafenet.commands.push",
                "publish a model, a dataset and/or the metric to the Hub (same code as push_to_hub.py)"),
}


def _build_parser(selected: tuple[str, ...] | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bafenet", description="DenseSIRST + BAFE-Net, Hugging Face-native.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (any position)")
    # command-word prefix -> its sub-parsers (what `add_subparsers` returns, an argparse.Action with `add_parser`)
    groups: dict[tuple[str, ...], Any] = {(): parser.add_subparsers(dest="cmd0", metavar="COMMAND")}
    for words, (module, help_text) in COMMANDS.items():
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = sub.add_subparsers(dest=f"cmd{depth}", metavar="COMMAND")
        command_parser = groups[words[:-1]].add_parser(words[-1], help=help_text, description=help_text)
        command_parser.set_defaults(_command=words)
        if words == selected:
            importlib.import_module(module).add_arguments(command_parser)
    return parser


def _selected_command(argv: Sequence[str]) -> tuple[str, ...] | None:
    words = tuple(a for a in argv if not a.startswith("-"))
    for command in COMMANDS:
        if words[: len(command)] == command:
            return command
    return None


def flush_denormals() -> None:
    """Treat denormal floats as zero on the CPU for this process: a trained model's activations hold denormals that
    slow CPU arithmetic several times (measured: a window batch 2.7x slower), and zero is as good a value for them.
    Every `bafenet` command and the trainer call it; library users can call `torch.set_flush_denormal(True)`."""
    import torch

    torch.set_flush_denormal(True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    selected = _selected_command(argv)
    parser = _build_parser(selected)
    args = parser.parse_args(argv)
    if getattr(args, "_command", None) is None:
        parser.print_help()
        return 2
    from .outputs import UserError

    flush_denormals()
    try:
        module = importlib.import_module(COMMANDS[args._command][0])
        return int(module.run(args) or 0)
    except (UserError, OSError, ValueError) as error:
        if debug:
            raise
        print(f"bafenet {' '.join(args._command)}: error: {error_line(error)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
