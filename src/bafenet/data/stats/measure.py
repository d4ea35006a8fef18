"""One image: the per-target and per-image measurements (size, local contrast, brightness rank, nearest target,
sky overlap) and the densest-cluster crop kept for the examples plot. Definitions: the package docstring."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sample import DetectionSample



RING_GAP = 1  # px between the box and the background ring
RING_WIDTH = 3  # px width of the background ring
CONTRAST_THRESHOLD = 2.0  # the DenseSIRST README's "local contrast below 2"
EXAMPLE_WINDOW = 48  # px side of an example crop (original pixels)
THUMBNAIL = 160  # px, longer side of the whole-image thumbnail above each crop

TARGET_COLUMNS = (
    "image_id", "split", "target", "x", "y", "w", "h", "box_area", "mask_area", "cx", "cy",
    "mean_intensity", "peak_intensity", "background_mean", "local_contrast", "local_contrast_with_neighbours",
    "local_contrast_cells", "brightness_rank", "brighter_fraction", "background_brighter", "is_brightest",
    "sky_overlap", "nearest_target_distance",
)  # fmt: skip


class StatsError(ValueError):
    """Bad input to the statistics; the message names the image (or file) and the problem."""


ImageAnnotations = DetectionSample  # the one sample type (``split`` says where the image comes from)


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
    boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)
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
    from bafenet.data.drawing import densest_cluster

    image = np.asarray(sample.image)
    height, width = image.shape
    boxes = np.asarray(sample.boxes, np.float64).reshape(-1, 4)
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
