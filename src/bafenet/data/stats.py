"""Per-target statistics and pictures of DenseSIRST (or any dataset with the same columns).

``bafenet data stats --dataset DIR_OR_REPO --out DIR`` measures every target of a built dataset folder, a Hub
dataset or a SIRSTdevkit folder and writes ``summary.json``, ``targets.csv`` (one row per target), ``images.csv``
(one row per image), six plots (``sizes.png``, ``contrast_cdf.png``, ``brightness_rank.png``,
``cluster_distance.png``, ``per_image.png``, ``examples.png``) and ``README.md`` (the Markdown the dataset card
embeds). The dataset builder calls :func:`write_card_stats` so that its card shows the same numbers and plots.

Definitions (original image pixels; boxes are xyxy, 0-based, exclusive max, as in the DenseSIRST XML):

* **size**: box width x height ``w x h`` (the XML's ``xmax - xmin`` and ``ymax - ymin``); ``box_area = w * h``;
  ``mask_area`` = target-mask pixels inside the box, i.e. the area of the target's mask component (the two are
  the same for the 99.8 % of DenseSIRST boxes that equal their component).
* **target pixels**: the target-mask pixels inside the box (all box pixels if the box holds no mask pixel).
* **local contrast** (``local_contrast``): mean grey value of the target pixels / mean grey value of a background
  ring: the pixels ``gap + 1 .. gap + width`` px (Chebyshev distance, default 2..4 px) beyond the box, clipped to
  the image, **excluding every target's pixels** (masks and boxes). The 1-px gap keeps the target's blurred rim
  out of the background; excluding the other targets keeps a dense cluster from raising its own background, the
  bias the DenseSIRST README itself points out. A ratio (not a difference) is comparable across images of
  different gain; 1 means "as bright as the surroundings".
* ``local_contrast_with_neighbours``: the same ring with the neighbouring targets' pixels left in.
* ``local_contrast_cells``: mean of the target pixels / the largest mean of the 8 box-sized cells that surround
  the box (the cell layout of the local contrast measure, LCM, of Chen et al. 2014; neighbours included). This is
  our best guess at the README's definition: it is the one that reproduces "90 % below 2" on the real data.
* **brightness rank**: ``1 +`` the number of image pixels strictly brighter than the target's brightest pixel
  (grey values; RGB converted to luminance). Rank 1 = the target holds the image's maximum grey value (ties
  count): it *is* the brightest point. ``background_brighter`` counts only non-target pixels strictly brighter
  than the target's peak: the false alarms a global threshold at that peak would give.
* **nearest-target distance**: Euclidean distance (px) from the box centre to the nearest other box centre of the
  same image (empty for a single-target image).
* **sky fraction**: sky-mask pixels / image pixels; a target's ``sky_overlap`` = share of its pixels in sky.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

__all__ = [
    "ImageAnnotations",
    "DatasetStats",
    "StatsError",
    "measure_image",
    "compute_target_stats",
    "write_card_stats",
    "iter_dataset",
    "iter_devkit",
    "load_source",
    "add_arguments",
    "run",
]

RING_GAP = 1  # px between the box and the background ring
RING_WIDTH = 3  # px width of the background ring
CONTRAST_THRESHOLD = 2.0  # the DenseSIRST README's "local contrast below 2"
NUM_EXAMPLES = 8  # crops in examples.png
EXAMPLE_WINDOW = 48  # px side of an example crop (original pixels)
THUMBNAIL = 160  # px, longer side of the whole-image thumbnail above each crop
CARD_COMMAND = "bafenet data stats --dataset . --out stats"

TARGET_COLUMNS = (
    "image_id", "split", "target", "x", "y", "w", "h", "box_area", "mask_area", "cx", "cy",
    "mean_intensity", "peak_intensity", "background_mean", "local_contrast", "local_contrast_with_neighbours",
    "local_contrast_cells", "brightness_rank", "brighter_fraction", "background_brighter", "is_brightest",
    "sky_overlap", "nearest_target_distance",
)  # fmt: skip
IMAGE_COLUMNS = (
    "image_id", "split", "width", "height", "num_targets", "num_points", "sky_fraction", "target_fraction",
    "max_intensity",
)  # fmt: skip
_INT_TARGET_COLUMNS = ("target", "mask_area", "peak_intensity", "brightness_rank", "background_brighter",
                       "is_brightest")  # fmt: skip

# The DenseSIRST README's "Statistical characteristics" and comparison table, checked by `DatasetStats.claims`.
README_CLAIMS = {
    "small": "Most targets are extremely small, predominantly below 5 × 5 pixels",
    "mode": "The most frequent target size is 3 × 3 pixels",
    "contrast": "90% of targets have local contrast below 2",
    "brightest": "Only a minority of targets are the brightest points in their images",
    "area": "Average target area 6 (comparison table)",
    "count": "1,024 images, 13,655 targets",
}


class StatsError(ValueError):
    """Bad input to the statistics; the message names the image (or file) and the problem."""


@dataclass
class ImageAnnotations:
    """One image and its labels, in the DenseSIRST conventions.

    Attributes:
        image_id: the image's id (file stem).
        image: (H, W) uint8 grey image (RGB/RGBA already converted to luminance).
        boxes_xyxy: (N, 4) boxes in original pixels, 0-based, exclusive max.
        points: (M, 2) point labels (x, y), 0-based pixel column/row.
        target_mask: (H, W) bool, all target pixels.
        sky_mask: (H, W) bool, sky pixels.
        split: where the image comes from (reported in the CSVs).
    """

    image_id: str
    image: np.ndarray
    boxes_xyxy: np.ndarray
    points: np.ndarray
    target_mask: np.ndarray
    sky_mask: np.ndarray
    split: str = ""


@dataclass
class _Example:
    """A crop of the densest cluster of an image, kept for examples.png (so the source is read only once)."""

    image_id: str
    num_targets: int
    origin: tuple[int, int]
    image: np.ndarray
    sky: np.ndarray
    boxes_xyxy: np.ndarray
    points: np.ndarray
    image_size: tuple[int, int]  # (width, height) of the whole image
    thumbnail: np.ndarray  # the whole image, longer side THUMBNAIL px
    thumbnail_sky: np.ndarray
    sky_fraction: float


# --------------------------------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------------------------------


def _check(sample: ImageAnnotations) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(sample.image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise StatsError(f"{sample.image_id}: expected an (H, W) uint8 grey image, got {image.dtype} {image.shape}")
    masks = []
    for name in ("target_mask", "sky_mask"):
        mask = np.asarray(getattr(sample, name))
        if mask.shape != image.shape:
            raise StatsError(f"{sample.image_id}: {name} has shape {mask.shape} but the image has {image.shape}")
        masks.append(mask.astype(bool, copy=False))
    boxes = np.asarray(sample.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    points = np.asarray(sample.points, dtype=np.float64).reshape(-1, 2)
    height, width = image.shape
    bad = ~np.isfinite(boxes).all(1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    bad |= (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StatsError(
            f"{sample.image_id}: box {i} {boxes[i].tolist()} (xyxy, exclusive max) is empty or outside the "
            f"{width}x{height} image"
        )
    return image, masks[0], masks[1], boxes, points


def measure_image(
    sample: ImageAnnotations, ring_gap: int = RING_GAP, ring_width: int = RING_WIDTH
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Measure the targets of one image (definitions in the module docstring).

    Returns ``(targets, image_row)``: per-target columns (arrays of length N, the keys of ``TARGET_COLUMNS`` after
    ``image_id``, ``split`` and ``target``) and the image's row (the keys of ``IMAGE_COLUMNS``).
    """
    image, target_mask, sky_mask, boxes, points = _check(sample)
    height, width = image.shape
    n = len(boxes)
    x0, y0 = np.floor(boxes[:, 0]).astype(np.int64), np.floor(boxes[:, 1]).astype(np.int64)
    x1, y1 = np.ceil(boxes[:, 2]).astype(np.int64), np.ceil(boxes[:, 3]).astype(np.int64)

    occupied = target_mask.copy()  # every pixel of any target: its mask and its box
    for i in range(n):
        occupied[y0[i] : y1[i], x0[i] : x1[i]] = True
    counts = np.bincount(image.ravel(), minlength=256)
    brighter = image.size - np.cumsum(counts)  # brighter[v] = number of pixels with grey value > v
    background_counts = counts - np.bincount(image[occupied], minlength=256)
    background_brighter = int(background_counts.sum()) - np.cumsum(background_counts)

    cols = {k: np.zeros(n, np.float64) for k in TARGET_COLUMNS[3:]}
    planes = (image, target_mask, sky_mask, occupied)
    for chunk in _chunks(x1 - x0, y1 - y0, ring_gap + ring_width):
        measured = _measure_targets(planes, x0[chunk], y0[chunk], x1[chunk], y1[chunk], ring_gap, ring_width)
        for k, v in measured.items():
            cols[k][chunk] = v
    peak = cols["peak_intensity"].astype(np.int64)
    cols["brightness_rank"] = 1 + brighter[peak].astype(np.float64)
    cols["background_brighter"] = background_brighter[peak].astype(np.float64)
    cols["x"], cols["y"] = boxes[:, 0], boxes[:, 1]
    cols["w"], cols["h"] = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cols["box_area"] = cols["w"] * cols["h"]
    cols["cx"], cols["cy"] = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    cols["brighter_fraction"] = (cols["brightness_rank"] - 1) / image.size
    cols["is_brightest"] = (cols["brightness_rank"] == 1).astype(np.float64)
    cols["nearest_target_distance"] = _nearest_distance(cols["cx"], cols["cy"])
    image_row = {
        "image_id": sample.image_id,
        "split": sample.split,
        "width": width,
        "height": height,
        "num_targets": n,
        "num_points": len(points),
        "sky_fraction": np.count_nonzero(sky_mask) / image.size,
        "target_fraction": np.count_nonzero(target_mask) / image.size,
        "max_intensity": int(np.flatnonzero(counts)[-1]),
    }
    return cols, image_row


_MAX_CHUNK_PIXELS = 1 << 20  # pixels gathered at once by `_measure_targets` (bounds memory for huge boxes)


def _chunks(w: np.ndarray, h: np.ndarray, reach: int) -> Iterator[np.ndarray]:
    """Groups of target indices, similar sizes together, whose padded windows stay under ``_MAX_CHUNK_PIXELS``."""
    order = np.argsort(np.maximum(w, h), kind="stable")
    start = 0
    while start < len(order):
        end, max_w, max_h = start, 0, 0
        while end < len(order):
            mw, mh = max(max_w, int(w[order[end]])), max(max_h, int(h[order[end]]))
            volume = (end + 1 - start) * (mh + 2 * max(reach, mh)) * (mw + 2 * max(reach, mw))
            if end > start and volume > _MAX_CHUNK_PIXELS:
                break
            end, max_w, max_h = end + 1, mw, mh
        yield order[start:end]
        start = end


def _measure_targets(
    planes: tuple[np.ndarray, ...], x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, gap: int,
    width: int,
) -> dict[str, np.ndarray]:
    """Box-relative statistics of K targets at once, on a (K, Y, X) stack of windows around their boxes.

    Each window spans the box plus ``max(gap + width, box size)`` px on every side (enough for the ring and the 8
    LCM cells); window pixels outside the image are marked invalid.
    """
    image, target_mask, sky_mask, occupied = planes
    height, img_width = image.shape
    w, h = x1 - x0, y1 - y0
    reach = gap + width
    pad_y, pad_x = max(reach, int(h.max())), max(reach, int(w.max()))
    u = np.arange(-pad_y, int(h.max()) + pad_y)  # window rows relative to each box's top row
    v = np.arange(-pad_x, int(w.max()) + pad_x)
    rows, cols = y0[:, None] + u, x0[:, None] + v  # (K, Y), (K, X) image coordinates
    valid = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < img_width))[:, None, :]
    index = (np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, img_width - 1)[:, None, :])
    grey = image[index].astype(np.float64)
    in_target, in_sky, in_occupied = target_mask[index], sky_mask[index], occupied[index]

    def rect(margin: int) -> np.ndarray:  # (K, Y, X): inside the box grown by `margin` px
        r = (u >= -margin) & (u[None, :] < h[:, None] + margin)
        c = (v >= -margin) & (v[None, :] < w[:, None] + margin)
        return r[:, :, None] & c[:, None, :]

    in_box = rect(0)
    target = in_box & in_target
    mask_area = target.sum((1, 2))
    target = np.where((mask_area > 0)[:, None, None], target, in_box)  # no mask pixel: use the whole box
    count = target.sum((1, 2))
    mean = (grey * target).sum((1, 2)) / count
    ring = rect(reach) & ~rect(gap) & valid
    ring_clean = ring & ~in_occupied

    # the 8 box-sized LCM cells: cell (cy, cx) in {-1, 0, 1}^2 around the box, the centre (0, 0) is the box itself
    cy, cx = np.floor_divide(u[None, :], h[:, None]), np.floor_divide(v[None, :], w[:, None])
    cell = (cy + 1)[:, :, None] * 3 + (cx + 1)[:, None, :]
    in_cell = ((np.abs(cy) <= 1)[:, :, None] & (np.abs(cx) <= 1)[:, None, :]) & valid & (cell != 4)
    flat = (np.arange(len(x0))[:, None, None] * 9 + cell)[in_cell]
    cell_sum = np.bincount(flat, weights=grey[in_cell], minlength=9 * len(x0)).reshape(-1, 9)
    cell_count = np.bincount(flat, minlength=9 * len(x0)).reshape(-1, 9)
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_mean = np.where(cell_count > 0, cell_sum / np.maximum(cell_count, 1), -np.inf).max(1)
    cell_mean[~np.isfinite(cell_mean)] = np.nan

    return {
        "mask_area": mask_area.astype(np.float64),
        "mean_intensity": mean,
        "peak_intensity": np.where(target, grey, -1.0).max((1, 2)),
        "background_mean": _masked_mean(grey, ring_clean),
        "local_contrast": _ratios(mean, _masked_mean(grey, ring_clean)),
        "local_contrast_with_neighbours": _ratios(mean, _masked_mean(grey, ring)),
        "local_contrast_cells": _ratios(mean, cell_mean),
        "sky_overlap": (target & in_sky).sum((1, 2)) / count,
    }


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over ``mask`` per leading index; NaN where the mask is empty."""
    count = mask.sum((1, 2))
    total = (values * mask).sum((1, 2))
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``; NaN without a background, inf over a black one (1 if both are black)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / denominator
    black = denominator == 0
    ratio[black] = np.where(numerator[black] > 0, np.inf, 1.0)
    return ratio


def _nearest_distance(cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    if len(cx) < 2:
        return np.full(len(cx), math.nan)
    d = np.hypot(cx[:, None] - cx[None, :], cy[:, None] - cy[None, :])
    np.fill_diagonal(d, np.inf)
    return d.min(1)


def _example(sample: ImageAnnotations, window: int = EXAMPLE_WINDOW) -> _Example | None:
    from bafenet.visualize import densest_cluster

    image = np.asarray(sample.image)
    height, width = image.shape
    boxes = np.asarray(sample.boxes_xyxy, np.float64).reshape(-1, 4)
    region = densest_cluster(boxes, window, (height, width))
    if region is None:
        return None
    ex0, ey0, ex1, ey1 = region
    points = np.asarray(sample.points, np.float64).reshape(-1, 2)
    keep = (boxes[:, 2] > ex0) & (boxes[:, 0] < ex1) & (boxes[:, 3] > ey0) & (boxes[:, 1] < ey1)
    keep_points = (points[:, 0] >= ex0) & (points[:, 0] < ex1) & (points[:, 1] >= ey0) & (points[:, 1] < ey1)
    from PIL import Image

    sky = np.asarray(sample.sky_mask, bool)
    scale = min(1.0, THUMBNAIL / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return _Example(
        image_id=sample.image_id,
        num_targets=len(boxes),
        origin=(ex0, ey0),
        image=image[ey0:ey1, ex0:ex1].copy(),
        sky=sky[ey0:ey1, ex0:ex1].copy(),
        boxes_xyxy=boxes[keep] - [ex0, ey0, ex0, ey0],
        points=points[keep_points] - [ex0, ey0],
        image_size=(width, height),
        thumbnail=np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX)),
        thumbnail_sky=np.asarray(Image.fromarray(sky).resize(size, Image.Resampling.NEAREST)),
        sky_fraction=float(sky.mean()),
    )


# --------------------------------------------------------------------------------------------------------------------
# Reading built datasets and devkits
# --------------------------------------------------------------------------------------------------------------------

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


def _row_name(row: dict[str, Any]) -> str:
    """The file stem of a dataset row: ``image_name`` (dataset 2.0.0; before, ``image_id`` held it)."""
    return str(row["image_name"] if "image_name" in row else row["image_id"])


def _row_to_sample(row: dict[str, Any], split: str) -> ImageAnnotations:
    image_id = _row_name(row)
    image, target, sky = (_open_image(row[c], c, image_id) for c in _IMAGE_COLUMNS)
    bbox = np.asarray(row["objects"]["bbox"], np.float64).reshape(-1, 4)
    for name, mask in (("target_mask", target), ("sky_mask", sky)):
        if mask.size != image.size:
            raise StatsError(
                f"{image_id}: {name} is {mask.size[0]}x{mask.size[1]} px, the image {image.size[0]}x{image.size[1]} px"
            )
    return ImageAnnotations(
        image_id=image_id,
        image=np.asarray(image if image.mode == "L" else image.convert("L")),
        boxes_xyxy=np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1),  # COCO xywh -> xyxy
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
        yield _row_name(row), split, (lambda row=row: _row_to_sample(row, split))


def iter_dataset(dataset: datasets.Dataset, split: str = "") -> Iterator[ImageAnnotations]:
    """The rows of a built DenseSIRST ``datasets.Dataset`` (pinned columns) as :class:`ImageAnnotations`."""
    for _, _, load in _dataset_items(dataset, split):
        yield load()


def _devkit_items(root: str | Path, image_ids: Sequence[str], split: str) -> Iterator[_Item]:
    from bafenet.data.devkit import SirstDevkit

    devkit = SirstDevkit(root)

    def load(image_id: str) -> ImageAnnotations:
        s = devkit.read(image_id)
        return ImageAnnotations(s.image_id, s.image, s.boxes, s.points, s.target_mask, s.sky_mask, split)

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


# --------------------------------------------------------------------------------------------------------------------
# A whole dataset
# --------------------------------------------------------------------------------------------------------------------


def compute_target_stats(
    source: datasets.DatasetDict | datasets.Dataset | Iterable[ImageAnnotations],
    *,
    ring_gap: int = RING_GAP,
    ring_width: int = RING_WIDTH,
    num_workers: int | None = None,
    progress: bool = True,
) -> DatasetStats:
    """Measure every target of ``source`` (definitions in the module docstring).

    Args:
        source: a ``datasets.DatasetDict`` (all its splits), a ``datasets.Dataset``, an iterable of
            :class:`ImageAnnotations` (e.g. :func:`iter_devkit`) or what :func:`load_source` returns. An image id
            met twice (e.g. in two splits) is measured once; ``DatasetStats.duplicates`` counts the repeats.
        ring_gap: px between the box and the background ring of the local contrast.
        ring_width: px width of that ring.
        num_workers: decoding/measuring threads (default: the number of CPUs, at most 4).
        progress: show a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    if ring_gap < 0 or ring_width < 1:
        raise StatsError(f"ring_gap must be >= 0 and ring_width >= 1 px, got {ring_gap} and {ring_width}")
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    items, total = _items(source)
    if total is None and hasattr(source, "values"):
        total = sum(len(ds) for ds in source.values())

    seen: set[str] = set()
    duplicates = 0

    def unique(items: Iterable[_Item]) -> Iterator[_Item]:
        nonlocal duplicates
        for item in items:
            if item[0] in seen:
                duplicates += 1
                bar.update()
                continue
            seen.add(item[0])
            yield item

    per_target: dict[str, list] = {k: [] for k in TARGET_COLUMNS}
    per_image: dict[str, list] = {k: [] for k in IMAGE_COLUMNS}
    examples: list[_Example] = []
    splits: list[str] = []
    with tqdm(total=total, desc="dataset statistics", unit="img", disable=not progress) as bar:
        for sample, cols, image_row, example in _ordered_map(
            lambda item: _measure(item, ring_gap, ring_width), unique(items), workers
        ):
            bar.update()
            n = image_row["num_targets"]
            if sample.split not in splits:
                splits.append(sample.split)
            per_target["image_id"].append(np.full(n, sample.image_id, dtype=object))
            per_target["split"].append(np.full(n, sample.split, dtype=object))
            per_target["target"].append(np.arange(n))
            for k, v in cols.items():
                per_target[k].append(v)
            for k in IMAGE_COLUMNS:
                per_image[k].append(image_row[k])
            if example is not None:
                examples.append(example)

    targets = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per_target.items()}
    for k in _INT_TARGET_COLUMNS:
        targets[k] = targets[k].astype(np.int64)
    for k in ("image_id", "split"):
        targets[k] = targets[k].astype(object)
    images = {k: np.asarray(v, dtype=object if k in ("image_id", "split") else None) for k, v in per_image.items()}
    if not len(images["image_id"]):
        raise StatsError("the dataset has no images to measure")
    return DatasetStats(
        targets=targets,
        images=images,
        ring_gap=ring_gap,
        ring_width=ring_width,
        splits=[s for s in splits if s],
        duplicates=duplicates,
        examples=_pick_examples(examples),
    )


def _pick_examples(examples: list[_Example], k: int = NUM_EXAMPLES) -> list[_Example]:
    """``k`` examples spread over the range of targets per image, densest first; deterministic."""
    ranked = sorted(examples, key=lambda e: (-e.num_targets, e.image_id))
    if len(ranked) <= k:
        return ranked
    picks = np.unique(np.rint(np.linspace(0, len(ranked) - 1, k)).astype(int))
    return [ranked[i] for i in picks]


@dataclass
class DatasetStats:
    """Per-target and per-image statistics of a dataset (columns of numpy arrays) and how they were measured."""

    targets: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    ring_gap: int = RING_GAP
    ring_width: int = RING_WIDTH
    splits: list[str] = field(default_factory=list)
    duplicates: int = 0
    examples: list[_Example] = field(default_factory=list, repr=False)

    @property
    def num_targets(self) -> int:
        return len(self.targets["image_id"])

    @property
    def num_images(self) -> int:
        return len(self.images["image_id"])

    def summary(self) -> dict[str, Any]:
        """Headline numbers, JSON-serialisable (NaN where undefined, e.g. no image with two targets)."""
        t, im = self.targets, self.images
        w, h = np.rint(t["w"]).astype(int), np.rint(t["h"]).astype(int)
        n = max(self.num_targets, 1)
        most_common = []
        if len(w):
            sizes, size_counts = np.unique(np.stack([w, h], 1), axis=0, return_counts=True)
            for i in np.argsort(-size_counts, kind="stable")[:5]:
                most_common.append({"w": int(sizes[i][0]), "h": int(sizes[i][1]), "count": int(size_counts[i]),
                                    "share": float(size_counts[i] / n)})  # fmt: skip
        nn = t["nearest_target_distance"]
        nn = nn[np.isfinite(nn)]
        contrast = {
            key: {**_quantiles(t[key]), "share_below_2": _share_below(t[key], CONTRAST_THRESHOLD)}
            for key in ("local_contrast", "local_contrast_with_neighbours", "local_contrast_cells")
        }
        contrast["local_contrast"]["rings_without_background"] = int(np.isnan(t["local_contrast"]).sum())
        return {
            "num_images": self.num_images,
            "num_targets": self.num_targets,
            "images_per_split": {s: int((im["split"] == s).sum()) for s in self.splits},
            "duplicate_images_skipped": self.duplicates,
            "definitions": {
                "size": "box w x h in px (XML xmax - xmin, ymax - ymin); mask_area = target-mask pixels in the box",
                "local_contrast": (
                    f"mean(target mask pixels) / mean(ring); ring = pixels {self.ring_gap + 1}..."
                    f"{self.ring_gap + self.ring_width} px (Chebyshev) beyond the box, clipped to the image, "
                    "excluding all targets' pixels"
                ),
                "local_contrast_with_neighbours": "as local_contrast, neighbouring targets' pixels kept in the ring",
                "local_contrast_cells": (
                    "mean(target mask pixels) / largest mean of the 8 box-sized cells around the box (LCM layout, "
                    "neighbours included); likely the DenseSIRST README's definition"
                ),
                "brightness_rank": "1 + number of image pixels brighter than the target's peak (1 = brightest)",
                "nearest_target_distance": "box centre to the nearest other box centre of the same image, px",
                "sky_fraction": "sky-mask pixels / image pixels",
            },
            "size": {
                "width_px": _quantiles(t["w"]),
                "height_px": _quantiles(t["h"]),
                "most_common_wxh": most_common,
                "share_below_5x5": _mean((w < 5) & (h < 5)),
                "share_at_most_5x5": _mean((w <= 5) & (h <= 5)),
                "box_area_px": _quantiles(t["box_area"]),
                "mask_area_px": _quantiles(t["mask_area"]),
            },
            "contrast": contrast,
            "brightness": {
                "share_brightest": _mean(t["is_brightest"]),
                "rank": _quantiles(t["brightness_rank"]),
                "share_no_background_pixel_brighter": _mean(t["background_brighter"] == 0),
                "images_whose_brightest_point_is_a_target": len(np.unique(t["image_id"][t["is_brightest"] > 0])),
            },
            "targets_per_image": _quantiles(im["num_targets"]),
            "nearest_target_distance_px": {
                **_quantiles(nn),
                "share_below_10px": _mean(nn < 10),
                "share_below_20px": _mean(nn < 20),
                "single_target_images": int((im["num_targets"] == 1).sum()),
            },
            "sky": {
                "sky_fraction": _quantiles(im["sky_fraction"]),
                "images_all_sky": int((im["sky_fraction"] >= 1).sum()),
                "images_without_sky": int((im["sky_fraction"] <= 0).sum()),
                "share_targets_in_sky": _mean(t["sky_overlap"] > 0.5),
            },
            "images_with_point_count_mismatch": int((im["num_points"] != im["num_targets"]).sum()),
        }

    def claims(self, summary: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The DenseSIRST README's claims, each with what was measured here and a verdict."""
        s = summary or self.summary()
        size, lc, br = s["size"], s["contrast"], s["brightness"]
        mode = size["most_common_wxh"][0] if size["most_common_wxh"] else {"w": 0, "h": 0, "share": math.nan}
        mask_area = size["mask_area_px"]
        keys = ("local_contrast", "local_contrast_with_neighbours", "local_contrast_cells")
        ring, ring_n, cells = (lc[k]["share_below_2"] for k in keys)
        contrast_verdict = (
            "yes" if min(ring, ring_n, cells) >= 0.9 else
            "with the LCM-cell definition only" if cells >= 0.9 else
            "nearly, with the LCM-cell definition" if cells >= 0.85 else "no"
        )  # fmt: skip
        return [
            {
                "claim": README_CLAIMS["small"],
                "measured": f"{_pct(size['share_below_5x5'])} have w < 5 and h < 5 px; "
                f"{_pct(size['share_at_most_5x5'])} are at most 5 × 5 px",
                "verdict": _yes(size["share_below_5x5"] > 0.5),
            },
            {
                "claim": README_CLAIMS["mode"],
                "measured": f"most frequent: {mode['w']} × {mode['h']} px ({_pct(mode['share'])} of targets)",
                "verdict": _yes(mode["w"] == 3 and mode["h"] == 3),
            },
            {
                "claim": README_CLAIMS["contrast"],
                "measured": f"below 2: {_pct(cells)} with the LCM cells (8 box-sized cells, neighbours included); "
                f"{_pct(ring)} with our ring excluding other targets; {_pct(ring_n)} with the ring including them",
                "verdict": contrast_verdict,
            },
            {
                "claim": README_CLAIMS["brightest"],
                "measured": f"{_pct(br['share_brightest'])} of targets hold their image's brightest grey value",
                "verdict": _yes(br["share_brightest"] < 0.5),
            },
            {
                "claim": README_CLAIMS["area"],
                "measured": f"mean mask area {mask_area['mean']:.1f} px (median {mask_area['median']:.0f}); "
                f"mean box area {size['box_area_px']['mean']:.1f} px",
                "verdict": _yes(abs(mask_area["mean"] - 6) <= 1),
            },
            {
                "claim": README_CLAIMS["count"],
                "measured": f"{s['num_images']:,} images, {s['num_targets']:,} targets",
                "verdict": _yes(s["num_images"] == 1024 and s["num_targets"] == 13655),
            },
        ]

    def write(self, out_dir: str | Path, command: str = "", plots: bool = True) -> dict[str, Path]:
        """Write ``summary.json`` (with the claims), the CSVs, the plots and ``README.md`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        summary["claims"] = self.claims(summary)
        files = {"summary": out / "summary.json", "targets": out / "targets.csv", "images": out / "images.csv"}
        files["summary"].write_text(json.dumps(_jsonable(summary), indent=2, ensure_ascii=False) + "\n")
        _write_csv(files["targets"], self.targets, TARGET_COLUMNS)
        _write_csv(files["images"], self.images, IMAGE_COLUMNS)
        if plots:
            files.update(_write_plots(self, out))
        files["readme"] = out / "README.md"
        files["readme"].write_text(self.to_markdown(summary, heading="#", command=command, plots=plots) + "\n")
        return files

    def to_markdown(
        self,
        summary: dict[str, Any] | None = None,
        link_prefix: str = "",
        heading: str = "##",
        command: str = "",
        plots: bool = True,
    ) -> str:
        """Markdown: claims table, summary table, definitions and plots (files linked under ``link_prefix``)."""
        s = summary or self.summary()
        claims = s.get("claims") or self.claims(s)
        size, lc, br = s["size"], s["contrast"], s["brightness"]
        nn, sky = s["nearest_target_distance_px"], s["sky"]
        splits = ", ".join(f"{k} {v:,}" for k, v in s["images_per_split"].items())
        made_by = f"`{command}`" if command else "`bafenet data stats`"
        lines = [
            f"{heading} Dataset statistics",
            "",
            f"Measured with {made_by} on {s['num_images']:,} images and {s['num_targets']:,} targets"
            + (f" (images per split: {splits})" if splits else "")
            + f". Per-target values: [`targets.csv`]({link_prefix}targets.csv); per image: "
            f"[`images.csv`]({link_prefix}images.csv); all numbers: [`summary.json`]({link_prefix}summary.json).",
            "",
            f"{heading}# The DenseSIRST README's claims, checked",
            "",
            "| claim (DenseSIRST README) | measured here | holds? |",
            "| --- | --- | --- |",
            *[f"| {c['claim']} | {c['measured']} | {c['verdict']} |" for c in claims],
            "",
            f"{heading}# Summary",
            "",
            "| quantity | median | mean | 5th–95th percentile | max |",
            "| --- | --- | --- | --- | --- |",
            _row("box width w (px)", size["width_px"]),
            _row("box height h (px)", size["height_px"]),
            _row("mask area (px)", size["mask_area_px"]),
            _row("local contrast, ring without other targets (ratio)", lc["local_contrast"], 2),
            _row("local contrast, ring with other targets (ratio)", lc["local_contrast_with_neighbours"], 2),
            _row("local contrast, LCM cells (ratio)", lc["local_contrast_cells"], 2),
            _row("brightness rank (1 = brightest pixel)", br["rank"], 0),
            _row("targets per image", s["targets_per_image"], 0),
            _row("distance to the nearest other target (px)", nn),
            _row("sky fraction per image", sky["sky_fraction"], 2),
            "",
            f"{_pct(nn['share_below_10px'])} of targets have another target within 10 px and "
            f"{_pct(nn['share_below_20px'])} within 20 px. {_pct(sky['share_targets_in_sky'])} of targets lie in "
            f"the sky; {sky['images_all_sky']:,} images are all sky and {sky['images_without_sky']:,} have no sky. "
            f"For {_pct(br['share_no_background_pixel_brighter'])} of targets no background pixel is brighter than "
            f"the target's peak, and in {br['images_whose_brightest_point_is_a_target']:,} of the "
            f"{s['num_images']:,} images the brightest point lies on a target.",
            "",
            "Definitions. **Size**: box `w × h` in px (XML `xmax − xmin`, `ymax − ymin`); **mask area**: "
            "target-mask "
            "pixels in the box. **Local contrast**: mean grey value of the target's mask pixels divided by the mean "
            f"of a ring {self.ring_gap + 1}–{self.ring_gap + self.ring_width} px beyond the box (a "
            f"{self.ring_gap}-px gap keeps the target's blurred rim out), clipped to the image and excluding the "
            "pixels of all targets, so that a dense cluster does not raise its own background (the README notes "
            "that including neighbours underestimates contrast; that variant is shown too). The **LCM-cell** "
            "variant divides by the brightest of the 8 box-sized cells around the box (Chen et al. 2014 layout, "
            "neighbours included); it is the definition that reproduces the README's 90 %. **Brightness rank**: "
            "1 + the number of image pixels strictly brighter than the target's brightest pixel (rank 1: the "
            "target holds the image's maximum grey value). **Nearest other target**: distance between box centres "
            "within the same image.",
        ]
        if not plots:
            return "\n".join(lines)
        lines += [
            "",
            f"![Target sizes]({link_prefix}sizes.png)",
            "",
            f"![Local contrast, cumulative distribution]({link_prefix}contrast_cdf.png)",
            "",
            f"![Brightness rank of targets]({link_prefix}brightness_rank.png)",
            "",
            f"![Distance to the nearest other target]({link_prefix}cluster_distance.png)",
            "",
            f"![Targets and sky per image]({link_prefix}per_image.png)",
            "",
            f"![Example crops with boxes, points and sky]({link_prefix}examples.png)",
        ]
        return "\n".join(lines)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {k: math.nan for k in ("mean", "min", "p5", "p25", "median", "p75", "p95", "max")}
    p = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "mean": float(v.mean()), "min": float(v.min()), "p5": float(p[0]), "p25": float(p[1]), "median": float(p[2]),
        "p75": float(p[3]), "p95": float(p[4]), "max": float(v.max()),
    }  # fmt: skip


def _mean(condition: np.ndarray) -> float:
    return float(np.mean(condition)) if len(condition) else math.nan


def _share_below(values: np.ndarray, threshold: float) -> float:
    valid = ~np.isnan(values)
    return float((values[valid] < threshold).mean()) if valid.any() else math.nan


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


def _fmt(x: float, digits: int) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞"
    return f"{x:,.{digits}f}"


def _row(name: str, q: dict[str, float], digits: int = 1) -> str:
    return (
        f"| {name} | {_fmt(q['median'], digits)} | {_fmt(q['mean'], max(digits, 1))} | "
        f"{_fmt(q['p5'], digits)}–{_fmt(q['p95'], digits)} | {_fmt(q['max'], digits)} |"
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf
    return obj


def _write_csv(path: Path, columns: dict[str, np.ndarray], names: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*(columns[k].tolist() for k in names)):
            writer.writerow([_cell(v) for v in row])


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return ""  # undefined (e.g. no other target in the image)
        if v.is_integer():
            return int(v)
        return f"{v:.5g}"
    return v


def write_card_stats(dataset: datasets.DatasetDict, out_dir: Path) -> str:
    """Measure ``dataset`` and write its statistics under ``out_dir/stats/``; return Markdown for the dataset card.

    The Markdown (claims table, summary table, definitions, plots) links the files relative to ``out_dir``, so it
    belongs in ``out_dir/README.md``. All splits are measured; an image in several splits counts once.
    """
    out_dir = Path(out_dir)
    stats = compute_target_stats(dataset)
    summary = stats.summary()
    summary["claims"] = stats.claims(summary)
    stats.write(out_dir / "stats", command=CARD_COMMAND)
    return stats.to_markdown(summary, link_prefix="stats/", command=CARD_COMMAND)


# --------------------------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API on an Agg canvas: no pyplot state, no display needed)
# --------------------------------------------------------------------------------------------------------------------

_BLUE, _ORANGE, _GREEN, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#555555"


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path)
    return path


def _plot_sizes(stats: DatasetStats, path: Path) -> Path:
    t = stats.targets
    cap = 10
    w = np.clip(np.rint(t["w"]).astype(int), 1, cap)
    h = np.clip(np.rint(t["h"]).astype(int), 1, cap)
    grid = np.zeros((cap, cap))
    np.add.at(grid, (h - 1, w - 1), 1)
    share = 100 * grid / max(len(w), 1)
    fig, (ax, ax2) = _figure(11, 4.6, 2)
    image = ax.imshow(share, origin="lower", cmap="viridis", extent=(0.5, cap + 0.5, 0.5, cap + 0.5))
    for (row, col), value in np.ndenumerate(share):
        if value >= 0.05:
            ax.text(col + 1, row + 1, f"{value:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if value < share.max() / 2 else "black")
    ticks = list(range(1, cap + 1))
    labels = [str(v) for v in ticks[:-1]] + [f"≥{cap}"]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("box width w (px)")
    ax.set_ylabel("box height h (px)")
    ax.set_title("Target box size w × h (% of targets)")
    fig.colorbar(image, ax=ax, label="% of targets", shrink=0.85)

    area = t["mask_area"]
    top = 60
    ax2.hist(np.clip(area, 0, top), bins=np.arange(0.5, top + 1.5, 1), color=_BLUE, edgecolor="white", linewidth=0.3)
    mean = float(np.mean(area)) if len(area) else math.nan
    ax2.axvline(mean, color=_ORANGE, linestyle="-", label=f"mean here: {mean:.1f} px")
    ax2.axvline(6, color=_GREY, linestyle="--", label="README's average: 6 px")
    ax2.set_xlabel(f"target mask area (px; last bin = ≥ {top})")
    ax2.set_ylabel("number of targets")
    ax2.set_title("Target area from the pixel mask")
    ax2.legend(frameon=False)
    return _save(fig, path)


def _plot_contrast(stats: DatasetStats, path: Path) -> Path:
    fig, ax = _figure(7, 4.6)
    t = stats.targets
    series = [
        ("ring, other targets excluded (ours)", t["local_contrast"], _BLUE, "-"),
        ("ring, other targets included", t["local_contrast_with_neighbours"], _ORANGE, "--"),
        ("8 LCM cells, brightest cell (README's?)", t["local_contrast_cells"], _GREEN, "-."),
    ]
    high = 2.5
    for label, values, color, style in series:
        v = np.sort(values[~np.isnan(values)])
        if len(v):
            below = float((v < CONTRAST_THRESHOLD).mean())
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=color, linestyle=style,
                    label=f"{label}: {100 * below:.1f} % < 2")
            finite = v[np.isfinite(v)]
            if len(finite):
                high = max(high, float(np.percentile(finite, 99)))
    ax.axvline(CONTRAST_THRESHOLD, color=_GREY, linewidth=0.8)
    ax.axhline(0.9, color=_GREY, linewidth=0.8, linestyle=":")
    ax.text(CONTRAST_THRESHOLD, 0.5, "contrast 2 ", color=_GREY, fontsize=8, rotation=90, ha="right", va="center")
    ax.text(high, 0.9, "README: 90 % below 2 ", color=_GREY, fontsize=8, ha="right", va="bottom")
    ax.set_xlim(0.5, high)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"local contrast = target mean / background mean (ratio; ring {stats.ring_gap + 1}–"
                  f"{stats.ring_gap + stats.ring_width} px beyond the box)")
    ax.set_ylabel("share of targets with contrast ≤ x")
    ax.set_title("Local contrast, cumulative distribution")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _plot_brightness(stats: DatasetStats, path: Path) -> Path:
    edges = [1, 2, 11, 101, 1_001, 10_001, 100_001, np.inf]
    labels = ["1\n(brightest)", "2–10", "11–100", "101–1k", "1k–10k", "10k–100k", ">100k"]
    t = stats.targets
    n = max(stats.num_targets, 1)
    fig, ax = _figure(7, 4.6)
    x = np.arange(len(labels))
    for offset, values, color, label in [
        (-0.2, t["brightness_rank"], _BLUE, "rank among all pixels"),
        (0.2, t["background_brighter"] + 1, _ORANGE, "1 + background pixels brighter than the peak"),
    ]:
        counts, _ = np.histogram(values, bins=edges)
        bars = ax.bar(x + offset, 100 * counts / n, width=0.4, color=color, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_xlabel("brightness rank of the target's brightest pixel within its image (1 = brightest point)")
    ax.set_ylabel("% of targets")
    ax.set_title("Is the target the brightest point of its image?")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def _plot_distance(stats: DatasetStats, path: Path) -> Path:
    d = stats.targets["nearest_target_distance"]
    d = d[np.isfinite(d)]
    # zoom on where the mass is (1-px bins up to 40 px), the long tail piles up in the last bin
    top = int(np.clip(5 * math.ceil(1.5 * np.percentile(d, 90) / 5), 20, 100)) if len(d) else 20
    step = 1 if top <= 40 else 2
    fig, ax = _figure(7, 4.6)
    counts, _, bars = ax.hist(np.clip(d, 0, top), bins=np.arange(0, top + step + 1e-9, step), color=_BLUE,
                              edgecolor="white", linewidth=0.3)
    if len(d) and counts[-1]:
        bars[-1].set_facecolor(_GREY)
        ax.annotate(f"≥ {top} px: {int(counts[-1])}", (top + step / 2, counts[-1]), ha="right", va="bottom",
                    fontsize=8, color=_GREY, xytext=(0, 3), textcoords="offset points")
    if len(d):
        median = float(np.median(d))
        ax.axvline(median, color=_ORANGE, label=f"median {median:.1f} px")
        ax.legend(frameon=False)
    ax.set_xlabel(f"distance to the nearest other target in the image (px, centre to centre; last bin = ≥ {top})")
    ax.set_ylabel("number of targets")
    ax.set_title("How clustered are the targets?")
    return _save(fig, path)


def _plot_per_image(stats: DatasetStats, path: Path) -> Path:
    im = stats.images
    fig, (ax, ax2) = _figure(11, 4.2, 2)
    counts = im["num_targets"].astype(int)
    top = int(counts.max()) if len(counts) else 1
    ax.hist(counts, bins=np.arange(-0.5, top + 1.5, 1), color=_BLUE, edgecolor="white", linewidth=0.3)
    ax.set_xlabel("targets per image")
    ax.set_ylabel("number of images")
    ax.set_title(f"Targets per image (mean {counts.mean() if len(counts) else math.nan:.1f})")
    ax2.hist(im["sky_fraction"].astype(float), bins=np.linspace(0, 1, 21), color=_BLUE, edgecolor="white",
             linewidth=0.3)
    ax2.set_xlabel("sky fraction of the image (sky pixels / all pixels)")
    ax2.set_ylabel("number of images")
    ax2.set_title("Sky fraction per image")
    return _save(fig, path)


def _stretch(grey: np.ndarray, sky: np.ndarray, sky_rgb: np.ndarray, alpha: float) -> np.ndarray:
    """Grey -> RGB stretched from the 1st percentile to the maximum, sky tinted."""
    values = grey.astype(np.float64)
    low, high = (np.percentile(values, 1), values.max()) if values.size else (0.0, 1.0)
    rgb = np.repeat(np.clip((values - low) / max(high - low, 1.0), 0, 1)[..., None], 3, axis=-1)
    rgb[sky] = (1 - alpha) * rgb[sky] + alpha * sky_rgb
    return rgb


def _plot_examples(stats: DatasetStats, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    from bafenet.visualize import GROUND_TRUTH_COLOR, INSET_FRAME_COLOR, SKY_COLOR

    examples = stats.examples
    ncols = 4
    nrows = 2 * max(1, math.ceil(len(examples) / ncols))  # a whole-image row above each row of crops
    fig = Figure(figsize=(3.0 * ncols, 2.7 * nrows + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(nrows, ncols, height_ratios=[0.75, 1] * (nrows // 2))).reshape(nrows, ncols)
    box_color = tuple(c / 255 for c in GROUND_TRUTH_COLOR)
    frame_color = tuple(c / 255 for c in INSET_FRAME_COLOR)
    sky_rgb = np.asarray(SKY_COLOR, np.float64) / 255
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, ex in enumerate(examples):
        top, ax = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
        # whole image: sky tinted, the crop framed
        width, height = ex.image_size
        top.imshow(_stretch(ex.thumbnail, ex.thumbnail_sky, sky_rgb, 0.35), interpolation="antialiased",
                   extent=(0, width, height, 0))
        top.add_patch(Rectangle(ex.origin, ex.image.shape[1], ex.image.shape[0], fill=False, edgecolor=frame_color,
                                linewidth=1.5))
        top.set_title(f"{ex.image_id} ({width}×{height} px)\n{ex.num_targets} target{'s' * (ex.num_targets != 1)}, "
                      f"{100 * ex.sky_fraction:.0f} % sky", fontsize=8)
        # the crop, 1 image pixel = 1 block
        ax.imshow(_stretch(ex.image, ex.sky, sky_rgb, 0.2), interpolation="nearest")
        if ex.sky.any() and not ex.sky.all():
            ax.contour(ex.sky.astype(float), levels=[0.5], colors=[sky_rgb], linewidths=1.2, linestyles="--")
        pad = 0.7  # the outline sits just outside the box so the target pixels stay visible
        for bx0, by0, bx1, by1 in ex.boxes_xyxy:
            ax.add_patch(Rectangle((bx0 - 0.5 - pad, by0 - 0.5 - pad), bx1 - bx0 + 2 * pad, by1 - by0 + 2 * pad,
                                   fill=False, edgecolor=box_color, linewidth=1.0))
        if len(ex.points):
            ax.plot(ex.points[:, 0], ex.points[:, 1], "+", color="red", markersize=5, markeredgewidth=1.0)
        ax.set_xlim(-0.5, ex.image.shape[1] - 0.5)
        ax.set_ylim(ex.image.shape[0] - 0.5, -0.5)
        for spine in ax.spines.values():
            spine.set_edgecolor(frame_color)
        ax.set_title(f"{ex.image.shape[1]}×{ex.image.shape[0]} px crop at ({ex.origin[0]}, {ex.origin[1]})",
                     fontsize=8)
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor=frame_color, label="crop shown below"),
            Patch(facecolor="none", edgecolor=box_color, label="box (drawn just outside)"),
            Line2D([], [], marker="+", color="red", linestyle="none", label="point label"),
            Patch(facecolor=sky_rgb, alpha=0.4, edgecolor=sky_rgb, linestyle="--", label="sky (tint, dashed edge)"),
        ],
        loc="outside lower center", ncols=4, frameon=False, fontsize=8,
    )
    fig.suptitle("Example images and their densest target cluster (grey values stretched per panel)", fontsize=10)
    return _save(fig, path)


def _write_plots(stats: DatasetStats, out: Path) -> dict[str, Path]:
    return {
        "sizes": _plot_sizes(stats, out / "sizes.png"),
        "contrast_cdf": _plot_contrast(stats, out / "contrast_cdf.png"),
        "brightness_rank": _plot_brightness(stats, out / "brightness_rank.png"),
        "cluster_distance": _plot_distance(stats, out / "cluster_distance.png"),
        "per_image": _plot_per_image(stats, out / "per_image.png"),
        "examples": _plot_examples(stats, out / "examples.png"),
    }


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


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
    import sys

    from bafenet.data.devkit import DevkitError
    from bafenet.outputs import claim_dir, replaced_dir

    local = Path(str(args.dataset)).expanduser()
    inputs = [local] if local.exists() else []
    claim_dir(args.out, "data stats", inputs=inputs, overwrite=args.overwrite)  # before measuring
    try:
        source = load_source(args.dataset, args.config, args.split, args.skip_missing)
        stats = compute_target_stats(
            source, ring_gap=args.ring_gap, ring_width=args.ring_width, num_workers=args.num_workers
        )
    except (StatsError, DevkitError) as err:
        print(f"bafenet data stats: error: {err}", file=sys.stderr)
        return 2
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
