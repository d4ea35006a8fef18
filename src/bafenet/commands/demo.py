"""``bafenet demo``: the command line of `bafenet.demo` (a Gradio app on this machine)."""

from __future__ import annotations

import argparse

from bafenet.demo import DEFAULT_PORT, load_demo

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model's own .py files (default: the installed BAFE-Net classes load it)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--operating-threshold", type=float, default=None,
                        help="where the score slider starts (default: the model's stored operating point)")


def run(args: argparse.Namespace) -> int:
    import os

    from bafenet.inputs import check_model_path
    from bafenet.outputs import UserError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("bafenet demo needs gradio: pip install 'bafenet[demo]'") from None
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    check_model_path(args.model)
    demo = load_demo(args.model, trust_remote_code=args.trust_remote_code, revision=args.revision,
                     operating_threshold=args.operating_threshold)
    demo.launch(server_name=args.host, server_port=args.port, share=False)
    return 0
