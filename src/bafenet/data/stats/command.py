"""``bafenet data stats``: open a built dataset, a Hub dataset or a devkit, measure it, write the files."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import datasets

from .measure import RING_GAP, RING_WIDTH, StatsError
from .sources import _Parts, _devkit_items
from .summary import compute_target_stats


def _is_devkit(path: Path) -> bool:
    return (path / "Splits").is_dir() and (path / "PNGImages").is_dir()


def load_source(
    dataset: str | Path, config: str | None = None, splits: Sequence[str] | None = None, skip_missing: bool = False
) -> datasets.DatasetDict | _Parts:
    """Open a built dataset folder, a Hub dataset id or a SIRSTdevkit folder for :func:`compute_target_stats`.

    ``splits``: dataset split expressions (``"test"``, ``"train+validation"``; default: all splits of ``config``),
    or for a devkit split-file stems (default: ``train_v2``, ``val_v2``, ``test_v2``, i.e. every image).
    ``skip_missing`` (devkit only) skips the ids whose PNG image is absent instead of failing.
    """
    path = Path(dataset).expanduser()
    if path.is_dir() and _is_devkit(path):
        from bafenet.data.devkit import SirstDevkit

        devkit = SirstDevkit(path)
        parts = []
        for name in splits or ("train_v2", "val_v2", "test_v2"):
            ids = devkit.split_ids(name)
            if skip_missing:
                missing = set(devkit.missing_images(ids))
                ids = [i for i in ids if i not in missing]
            parts.append((_devkit_items(path, ids, name), len(ids)))
        return _Parts(parts)
    if path.is_dir() and not (path / "README.md").is_file() and not any(path.glob("**/*.parquet")):
        raise StatsError(f"{path}: neither a built dataset folder (README.md + Parquet) nor a SIRSTdevkit")
    text = str(dataset)
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or path.parent.is_dir() and text.count("/")
    if not path.exists() and looks_local:
        raise StatsError(f"{path}: no such dataset folder or SIRSTdevkit (a Hub dataset id looks like 'owner/name')")

    import datasets as hf_datasets

    if splits:
        return hf_datasets.DatasetDict({s: hf_datasets.load_dataset(str(dataset), config, split=s) for s in splits})
    return hf_datasets.load_dataset(str(dataset), config)


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
