"""``bafenet data stats``: the command line of `bafenet.data.stats` (open a built dataset, a Hub dataset or a devkit,
measure it, write the files)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bafenet.data.stats import RING_GAP, RING_WIDTH, compute_target_stats, load_source

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="built dataset folder, Hub dataset id, or SIRSTdevkit folder")
    parser.add_argument("--config", default=None, help="dataset config, e.g. 'v1' (default: the dataset's default)")
    parser.add_argument(
        "--split", nargs="+", default=None, metavar="SPLIT",
        help="split(s) to measure, e.g. 'test' or 'train+validation'; for a devkit split-file stems such as "
        "'test_v2' (default: all splits; devkit: train_v2 val_v2 test_v2)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder (summary.json, CSVs, plots, README.md)")
    parser.add_argument("--ring-gap", type=int, default=RING_GAP, help="px between a box and its background ring")
    parser.add_argument("--ring-width", type=int, default=RING_WIDTH, help="px width of the background ring")
    parser.add_argument("--num-workers", type=int, default=None, help="decoding threads (default: CPUs, at most 4)")
    parser.add_argument("--skip-missing", action="store_true", help="devkit only: skip ids whose PNG image is absent")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="only the JSON, CSVs and README.md")
    parser.add_argument("--overwrite", action="store_true",
                        help="also replace an earlier stats folder to which files were added (never another folder)")


def run(args: argparse.Namespace) -> int:
    from bafenet.outputs import claim_dir, replaced_dir

    local = Path(str(args.dataset)).expanduser()
    inputs = [local] if local.exists() else []
    claim_dir(args.out, "data stats", inputs=inputs, overwrite=args.overwrite)  # before measuring
    # a StatsError / DevkitError (a ValueError naming the file) is one line, exit status 1 (`bafenet.cli`)
    source = load_source(args.dataset, args.config, args.split, args.skip_missing)
    stats = compute_target_stats(source, ring_gap=args.ring_gap, ring_width=args.ring_width,
                                 num_workers=args.num_workers)
    command = " ".join(
        ["bafenet data stats --dataset", str(args.dataset)]
        + (["--config", args.config] if args.config else [])
        + (["--split", *args.split] if args.split else [])
        + (["--skip-missing"] if args.skip_missing else [])
        + (["--no-plots"] if not args.plots else [])
        + ([f"--ring-gap {args.ring_gap}"] if args.ring_gap != RING_GAP else [])
        + ([f"--ring-width {args.ring_width}"] if args.ring_width != RING_WIDTH else [])
        + ["--out", str(args.out)]
    )
    with replaced_dir(args.out, "data stats", inputs=inputs, overwrite=args.overwrite) as tmp:
        files = stats.write(tmp, command=command, plots=args.plots)
        files = {k: Path(args.out) / p.relative_to(tmp) for k, p in files.items()}
    summary = json.loads(files["summary"].read_text())
    print(f"{stats.num_images:,} images, {stats.num_targets:,} targets. The DenseSIRST README's claims:")
    for claim in summary["claims"]:
        print(f"  - {claim['claim']}: {claim['measured']} -> {claim['verdict']}")
    print(f"wrote {', '.join(p.name for p in files.values())} to {args.out}")
    return 0
