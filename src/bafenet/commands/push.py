"""``bafenet push`` and ``push_to_hub.py``: the command line of `bafenet.hub` (a failed push is one line on stderr,
with every token masked)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bafenet.hub import push, resolve_token

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("The token comes from --token, else HF_TOKEN, else `hf auth login`; prefer HF_TOKEN (a --token "
                     "value is visible in the process list). The token is never printed or written.")
    group = parser.add_argument_group("what to push")
    group.add_argument("--model-dir", type=Path, help="model folder (save_pretrained output of training)")
    group.add_argument("--model-repo", help="model repo id, e.g. my-org/bafenet-r18 (with --space alone: the model "
                       "the demo loads, already on the Hub)")
    group.add_argument("--dataset-dir", type=Path, help="dataset folder written by `bafenet data build`")
    group.add_argument("--dataset-repo", help="dataset repo id, e.g. my-org/densesirst (without --dataset-dir: only "
                       "linked from the model card)")
    group.add_argument("--metric-repo", help="Space repo id for the VOC box metrics as an evaluate module, e.g. "
                       "my-org/densesirst_voc (generated like `bafenet metric export`; then "
                       "evaluate.load('my-org/densesirst_voc'))")
    group.add_argument("--space", metavar="NS/NAME", help="Space repo id for the web demo (`bafenet demo`) of "
                       "--model-repo: app.py, requirements.txt and README.md with the Space metadata")
    card = parser.add_argument_group("model card files (pushed with the model, shown in its card)")
    card.add_argument("--results", type=Path, action="append", default=[], metavar="FILE",
                      help="a results JSON of `bafenet evaluate` (repeatable): pushed with its PR curve; the card "
                      "shows its metrics, the table per frame size and the curve")
    card.add_argument("--card-image", type=Path, metavar="FRAME", help="an infrared frame (a real test frame): the "
                      "model's detections on it are drawn and pushed as card/overlay.png")
    card.add_argument("--card-latency", action="store_true", help="measure the time per frame for 320x256 to "
                      "1918x1080 frames on this machine (CPU) and push it as card/latency.json")
    parser.add_argument("--private", action="store_true", help="create new repos as private")
    parser.add_argument("--revision", help="branch to commit to (created from main if missing; default: main)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--commit-message", help="commit title (default: 'Upload ... with bafenet push')")
    parser.add_argument("--license", help="licence of the model card (default: 'other', pointing to the training "
                        "data, which carry no licence upstream)")
    parser.add_argument("--delete-remote-extras", action="store_true", help="delete the repo files that are not in "
                        "the folder, in the same commit (default: keep them; --dry-run lists them)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="do not upload files whose relative path matches GLOB (repeatable)")
    parser.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the `hf auth login` store)")
    parser.add_argument("--dry-run", action="store_true", help="check the folders and print what would be uploaded "
                        "(repo, revision, each file and its size); sends nothing")


def run(args: argparse.Namespace) -> int:
    from bafenet.outputs import UserError

    token = args.token
    try:
        push(model_dir=args.model_dir, model_repo=args.model_repo, dataset_dir=args.dataset_dir,
             dataset_repo=args.dataset_repo, metric_repo=args.metric_repo, space_repo=args.space, token=token,
             private=args.private, revision=args.revision, create_pr=args.create_pr,
             commit_message=args.commit_message, license=args.license, exclude=tuple(args.exclude),
             results=tuple(args.results), card_image=args.card_image, card_latency=args.card_latency,
             delete_remote_extras=args.delete_remote_extras, dry_run=args.dry_run)
    except (ValueError, OSError, RuntimeError, UserError) as err:  # folder/card/name errors, HTTP/upload errors
        message = str(err) + (f" ({err.__cause__})" if err.__cause__ else "")
        for secret in {token, resolve_token(None)} - {None, ""}:
            message = message.replace(secret, "***")
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="push_to_hub.py", description="Publish a BAFE-Net model folder, a "
                                     "DenseSIRST dataset folder and/or the VOC metric to the Hugging Face Hub.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
