"""``bafenet data build``: a SIRSTdevkit -> a folder that ``datasets.load_dataset("densesirst")`` loads.

The folder holds only Parquet shards and the dataset card::

    densesirst/
      README.md                                    card + YAML `configs:` (with `features:`)
      data/default/{train,validation,test}-00000-of-00001.parquet
      data/v1/{train,validation,test}-00000-of-00001.parquet
      stats/                                       plots/JSON of `bafenet.data.stats` (unless --no-stats)

Every image is read and validated once (it may be in several configs), in ``num_proc`` processes; the original PNG
bytes are embedded, so nothing is re-encoded. The rows are those of the `DenseSirst` GeneratorBasedBuilder
(`bafenet.data.densesirst`), written straight to Parquet with pyarrow.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..outputs import OutputLock, claim_dir, replaced_dir
from .card import BuildSummary, SplitSummary, render_card
from .densesirst import CONFIG_SPLITS, FEATURES, example_from_sample, object_id_bases, resolve_splits
from .devkit import EncodedSample, SirstDevkit, read_encoded

__all__ = ["build_dataset"]

logger = logging.getLogger(__name__)

COMMAND = "data build"
MAX_SHARD_BYTES = 500 * 2**20  # like datasets' push_to_hub default
ROW_GROUP_SIZE = 100  # rows per Parquet row group, datasets' choice for image datasets


def _encode_all(root: str, image_ids: list[str], bases: dict[str, int], num_proc: int) -> dict[str, dict]:
    """Read, validate and encode every image once; workers (spawned, importing only numpy and PIL) do the reading."""
    desc = f"Reading {len(image_ids)} images"
    num_proc = min(num_proc, len(image_ids))
    if num_proc <= 1:
        samples: Iterable[EncodedSample] = map(functools.partial(read_encoded, root), image_ids)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=num_proc, mp_context=multiprocessing.get_context("spawn"))
        chunksize = max(1, min(16, len(image_ids) // (4 * num_proc)))
        samples = executor.map(read_encoded, [root] * len(image_ids), image_ids, chunksize=chunksize)
    try:
        return {
            s.image_id: FEATURES.encode_example(example_from_sample(s, bases[s.image_id]))
            for s in tqdm(samples, total=len(image_ids), desc=desc, unit="img")
        }
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _write_split(table: pa.Table, folder: Path, split: str) -> None:
    num_shards = max(1, math.ceil(table.nbytes / MAX_SHARD_BYTES))
    rows_per_shard = math.ceil(table.num_rows / num_shards)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(num_shards):
        shard = table.slice(k * rows_per_shard, rows_per_shard)
        pq.write_table(shard, folder / f"{split}-{k:05d}-of-{num_shards:05d}.parquet", row_group_size=ROW_GROUP_SIZE)


def _card_stats(tables: dict[str, pa.Table], out_dir: Path) -> str:
    """Call `bafenet.data.stats.write_card_stats` on the default config."""
    import datasets
    from datasets.table import InMemoryTable

    from .stats import write_card_stats

    info = datasets.DatasetInfo(features=FEATURES)
    dataset = datasets.DatasetDict(
        {split: datasets.Dataset(InMemoryTable(table), info=info.copy(), split=datasets.NamedSplit(split))
         for split, table in tables.items()}
    )
    try:
        return write_card_stats(dataset, out_dir)
    except Exception as e:  # statistics are a bonus: report the failure loudly, keep the dataset
        logger.warning("write_card_stats failed (%s: %s): the card has no statistics section", type(e).__name__, e)
        error = f"{type(e).__name__}: {e}"
        return f"## Statistics\n\nNot available for this build: `write_card_stats` failed with `{error}`."


def build_dataset(
    devkit_dir: str | Path,
    out_dir: str | Path,
    num_proc: int = 1,
    skip_missing: bool = False,
    *,
    configs: Iterable[str] | None = None,
    splits: Iterable[str] | None = None,
    stats: bool = True,
    overwrite: bool = False,
) -> Path:
    """Build the DenseSIRST dataset folder from a SIRSTdevkit and return ``out_dir``.

    Args:
        devkit_dir: the ``SIRSTdevkit`` folder.
        out_dir: the dataset folder to write: new, empty, or an earlier build (replaced); anything else is refused
            (`bafenet.outputs`: the folder is written beside it and renamed into place).
        num_proc: processes that read and validate images.
        skip_missing: leave out images listed in the split files but missing from ``PNGImages/`` (the card and the
            log list them); without it, missing images raise a DevkitError that lists them.
        configs: restrict to these configs (``"default"``, ``"v1"``); default all.
        splits: restrict to these dataset splits (``"train"``, ``"validation"``, ``"test"``); default all. E.g.
            ``configs=["default"], splits=["test"]`` builds only the test split, which is complete in the real devkit.
        stats: embed `bafenet.data.stats.write_card_stats` plots/tables in the card.
        overwrite: also replace an earlier build to which files were added since.
    """
    start = time.perf_counter()
    devkit = SirstDevkit(devkit_dir)
    out = Path(out_dir).expanduser()
    configs = list(CONFIG_SPLITS) if configs is None else list(configs)
    unknown = [c for c in configs if c not in CONFIG_SPLITS]
    if unknown or not configs:
        raise ValueError(f"unknown config(s) {unknown}; choose from {list(CONFIG_SPLITS)}")
    all_splits = list(dict.fromkeys(s for c in CONFIG_SPLITS.values() for s in c))
    splits = all_splits if splits is None else list(splits)
    unknown = [s for s in splits if s not in all_splits]
    if unknown or not splits:
        raise ValueError(f"unknown split(s) {unknown}; choose from {all_splits}")
    plan = {c: {s: f for s, f in CONFIG_SPLITS[c].items() if s in splits} for c in configs}
    plan = {c: p for c, p in plan.items() if p}
    default_config = "default" if "default" in plan else next(iter(plan))
    claim_dir(out, COMMAND, inputs=[devkit.root], overwrite=overwrite)  # refuse before the long part
    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out, COMMAND):  # a second build into `out` is refused at once, not after reading

        split_files = list(dict.fromkeys(f for p in plan.values() for f in p.values()))
        ids, skipped = resolve_splits(devkit, {f: f for f in split_files}, skip_missing=skip_missing)
        unique_ids = list(dict.fromkeys(i for f in split_files for i in ids[f]))
        rows = _encode_all(str(devkit.root), unique_ids, object_id_bases(devkit), max(1, int(num_proc)))

        with replaced_dir(out, COMMAND, inputs=[devkit.root], overwrite=overwrite) as tmp:
            summary_configs: dict[str, list[SplitSummary]] = {}
            default_tables: dict[str, pa.Table] = {}
            schema = FEATURES.arrow_schema
            for config, config_splits in plan.items():
                summary_configs[config] = []
                for split, split_file in config_splits.items():
                    table = pa.Table.from_pylist([rows[i] for i in ids[split_file]], schema=schema)
                    _write_split(table, tmp / "data" / config, split)
                    num_targets = sum(len(rows[i]["objects"]["bbox"]) for i in ids[split_file])
                    summary_configs[config].append(
                        SplitSummary(split, split_file, table.num_rows, num_targets, table.nbytes,
                                     f"data/{config}/{split}-*.parquet", skipped[split_file])
                    )
                    if config == default_config:
                        default_tables[split] = table
            summary = BuildSummary(
                configs=summary_configs,
                default_config=default_config,
                num_images=len(unique_ids),
                num_targets=sum(len(rows[i]["objects"]["bbox"]) for i in unique_ids),
                synthetic=devkit.synthetic_info(),
            )
            (tmp / "README.md").write_text(render_card(summary, folder_name=out.name))  # a loadable folder before the statistics
            stats_md = _card_stats(default_tables, tmp) if stats else None
            if stats_md:
                (tmp / "README.md").write_text(render_card(summary, stats_md, folder_name=out.name))

    for config, config_splits in summary.configs.items():
        for s in config_splits:
            logger.info("%s/%s (%s): %d images, %d targets", config, s.name, s.devkit_split, s.num_images,
                        s.num_targets)
            if s.skipped:
                logger.warning("%s/%s: skipped %d missing images: %s", config, s.name, len(s.skipped),
                               ", ".join(s.skipped))
    logger.info("wrote %s in %.1f s", out, time.perf_counter() - start)
    return out
