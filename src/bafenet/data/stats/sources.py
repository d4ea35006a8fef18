"""Where the images come from: a built dataset (``datasets``) or a SIRSTdevkit folder, decoded in worker threads and
measured in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

from ..transforms import row_boxes, row_name, to_grey
from .measure import ImageAnnotations, StatsError, _Example, _example, measure_image


_IMAGE_COLUMNS = ("image", "target_mask", "sky_mask")
_NEEDED_COLUMNS = ("image", "image_id", "objects", "points", "target_mask", "sky_mask")

# A work item: (image_id, split, load) where load() decodes the image (run in a worker thread).
_Item = tuple[str, str, Callable[[], ImageAnnotations]]


def _open_image(value: Any, what: str, image_id: str) -> Any:
    """A PIL image from a decoded ``datasets.Image`` value or an undecoded ``{"bytes", "path"}`` dict."""
    import io

    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        try:
            image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
            image.load()
            return image
        except Exception as err:  # PIL raises many types; name the image and the column
            raise StatsError(f"{image_id}: cannot decode its {what!r} column: {err}") from err
    raise StatsError(f"{image_id}: its {what!r} column is empty (got {type(value).__name__})")


def _row_to_sample(row: dict[str, Any], split: str) -> ImageAnnotations:
    image_id = row_name(row)
    image, target, sky = (_open_image(row[c], c, image_id) for c in _IMAGE_COLUMNS)
    for name, mask in (("target_mask", target), ("sky_mask", sky)):
        if mask.size != image.size:
            raise StatsError(
                f"{image_id}: {name} is {mask.size[0]}x{mask.size[1]} px, the image {image.size[0]}x{image.size[1]} px"
            )
    return ImageAnnotations(
        image_id=image_id,
        image=to_grey(image),
        boxes=row_boxes(row),
        points=np.asarray(row["points"], np.float64).reshape(-1, 2),
        target_mask=np.asarray(target if target.mode == "L" else target.convert("L")) > 0,
        sky_mask=np.asarray(sky if sky.mode == "L" else sky.convert("L")) > 0,
        split=split,
    )


def _dataset_items(dataset: datasets.Dataset, split: str) -> Iterator[_Item]:
    import datasets as hf_datasets

    missing = [c for c in _NEEDED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise StatsError(
            f"dataset split {split or '?'!r} lacks the column(s) {missing}; it has {dataset.column_names} "
            "(expected a DenseSIRST dataset built by `bafenet data build`)"
        )
    raw = dataset.select_columns(list(_NEEDED_COLUMNS) + (["image_name"] if "image_name" in dataset.column_names
                                                           else []))
    for column in _IMAGE_COLUMNS:  # decode in the worker threads, not while iterating
        if isinstance(raw.features[column], hf_datasets.Image):
            raw = raw.cast_column(column, hf_datasets.Image(decode=False))
    for row in raw:
        yield row_name(row), split, (lambda row=row: _row_to_sample(row, split))


def iter_dataset(dataset: datasets.Dataset, split: str = "") -> Iterator[ImageAnnotations]:
    """The rows of a built DenseSIRST ``datasets.Dataset`` (pinned columns) as :class:`ImageAnnotations`."""
    for _, _, load in _dataset_items(dataset, split):
        yield load()


def _devkit_items(root: str | Path, image_ids: Sequence[str], split: str) -> Iterator[_Item]:
    from bafenet.data.devkit import SirstDevkit

    devkit = SirstDevkit(root)

    def load(image_id: str) -> ImageAnnotations:
        s = devkit.read(image_id)
        return replace(s, split=split)

    for image_id in image_ids:
        yield image_id, split, (lambda image_id=image_id: load(image_id))


def iter_devkit(root: str | Path, image_ids: Sequence[str], split: str = "") -> Iterator[ImageAnnotations]:
    """The images ``image_ids`` of a SIRSTdevkit folder (read by :class:`bafenet.data.devkit.SirstDevkit`)."""
    for _, _, load in _devkit_items(root, image_ids, split):
        yield load()


class _Parts:
    """Sized, chained work items (one part per split) for :func:`compute_target_stats`."""

    def __init__(self, parts: list[tuple[Iterable[_Item], int | None]]):
        self.parts = parts

    def __len__(self) -> int:
        return sum(n or 0 for _, n in self.parts)

    def __iter__(self) -> Iterator[_Item]:
        for items, _ in self.parts:
            yield from items


def _items(source: Any) -> tuple[Iterable[_Item], int | None]:
    if isinstance(source, _Parts):
        return source, len(source)
    if hasattr(source, "column_names") and hasattr(source, "items"):  # DatasetDict
        return _Parts([(_dataset_items(ds, name), len(ds)) for name, ds in source.items()]), None
    if hasattr(source, "column_names"):  # Dataset
        split = str(source.split or "")
        return _dataset_items(source, split), len(source)
    total = len(source) if hasattr(source, "__len__") else None
    return ((s.image_id, s.split, (lambda s=s: s)) for s in source), total


def _measure(item: _Item, ring_gap: int, ring_width: int) -> tuple[ImageAnnotations, dict, dict, _Example | None]:
    sample = item[2]()
    cols, image_row = measure_image(sample, ring_gap, ring_width)
    return sample, cols, image_row, _example(sample)


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``workers`` threads (PNG decoding releases the GIL), in order, few items in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="stats") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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
