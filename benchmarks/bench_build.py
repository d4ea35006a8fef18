"""Benchmark `bafenet data build` on the real DenseSIRST devkit against peers measured in the same process.

    python benchmarks/bench_build.py [--devkit ../shared/data/DenseSIRST/data/SIRSTdevkit] [--num-proc 1 2]

Peers (all over the same images, page cache warmed first):
  * read bytes      : read every PNG/XML/TXT file of the present images (the I/O floor);
  * decode          : decode every image and both masks with PIL (the validation floor; the build must decode);
  * datasets builder: datasets' own machinery, `DenseSirst(...).download_and_prepare(file_format="parquet")` for
                      both configs (same rows, one pass per config).
The build itself runs with ``skip_missing=True`` (the devkit lacks 172 iraytek train/val images), both configs, no
statistics (``stats=False``) and then once more with the statistics section, which is the stats engineer's cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from bafenet.data.build import build_dataset
from bafenet.data.densesirst import CONFIG_SPLITS, DenseSirst
from bafenet.data.devkit import SirstDevkit

DEFAULT_DEVKIT = Path(__file__).resolve().parents[1].parent / "shared/data/DenseSIRST/data/SIRSTdevkit"


def _present_ids(devkit: SirstDevkit) -> list[str]:
    ids = {i for config in CONFIG_SPLITS.values() for f in config.values() for i in devkit.split_ids(f)}
    return sorted(i for i in ids if devkit.image_path(i).is_file())


def read_bytes(devkit: SirstDevkit, ids: list[str]) -> int:
    total = 0
    for i in ids:
        for path in (devkit.image_path(i), devkit.bbox_path(i), devkit.points_path(i), devkit.target_mask_path(i),
                     devkit.sky_mask_path(i)):
            total += len(path.read_bytes())
    return total


def decode(devkit: SirstDevkit, ids: list[str]) -> None:
    for i in ids:
        for path in (devkit.image_path(i), devkit.target_mask_path(i), devkit.sky_mask_path(i)):
            Image.open(path).load()


def datasets_builder(devkit: SirstDevkit, tmp: Path) -> None:
    for config in CONFIG_SPLITS:
        builder = DenseSirst(config_name=config, data_dir=str(devkit.root), skip_missing=True, cache_dir=str(tmp / "c"))
        builder.download_and_prepare(str(tmp / config), file_format="parquet")


CPU_SECONDS: dict[str, float] = {}


def _cpu() -> float:
    t = os.times()  # this process and its reaped children (the build's worker processes)
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, *args, name: str = "") -> float:
    start, cpu = time.perf_counter(), _cpu()
    fn(*args)
    CPU_SECONDS[name] = _cpu() - cpu
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devkit", type=Path, default=DEFAULT_DEVKIT)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-stats", action="store_true", help="skip the build with the statistics section")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the 172 skipped ids would be logged at every build
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    devkit = SirstDevkit(args.devkit)
    ids = _present_ids(devkit)
    nbytes = read_bytes(devkit, ids)  # warm the page cache
    print(f"devkit {devkit.root}: {len(ids)} images present, {nbytes / 2**20:.0f} MiB of files; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for name, fn, arg in (
            ("read bytes (I/O floor)", read_bytes, ids),
            ("decode image + 2 masks (validation floor)", decode, ids),
            ("datasets GeneratorBasedBuilder -> parquet, 2 configs", datasets_builder, tmp / "hf"),
        ):
            results[name] = timed(fn, devkit, arg, name=name)
        peers = dict(results)
        for n in args.num_proc:
            name = f"bafenet data build --num-proc {n} --no-stats"
            results[name] = timed(
                lambda: build_dataset(devkit.root, tmp / f"b{n}", num_proc=n, skip_missing=True, stats=False), name=name
            )
        if not args.no_stats:
            n = args.num_proc[-1]
            name = f"bafenet data build --num-proc {n} (with statistics)"
            results[name] = timed(
                lambda: build_dataset(devkit.root, tmp / "bs", num_proc=n, skip_missing=True, stats=True), name=name
            )
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(map(len, results))
    load = os.getloadavg()[0]
    print(f"\nwall seconds (1-min load average at the end: {load:.1f}), CPU seconds, and wall ratios to the peers")
    header = "  ".join(f"{'/ ' + k.split(' (')[0][:14]:>16}" for k in peers)
    print(f"{'task':<{width}}  {'wall s':>7}  {'CPU s':>7}  {header}")
    for name, seconds in results.items():
        ratios = "  ".join(f"{seconds / p:>16.2f}" for p in peers.values())
        print(f"{name:<{width}}  {seconds:>7.2f}  {CPU_SECONDS[name]:>7.2f}  {ratios}")
    best = min(v for k, v in results.items() if k.startswith("bafenet") and "statistics" not in k)
    print(f"\nbest build (no statistics): {best:.1f} s for {len(ids)} images "
          f"(target <= 60 s on 2 cores); {peers['datasets GeneratorBasedBuilder -> parquet, 2 configs'] / best:.2f}x "
          "faster than the datasets builder peer")


if __name__ == "__main__":
    main()
