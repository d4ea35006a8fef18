"""Training-time transforms for DenseSIRST: resize, horizontal flip and BAG-CP.

Everything here works on :class:`DetectionSample` (numpy arrays) and takes an explicit
``numpy.random.Generator``, so a sample's augmentation is a pure function of its seed: the training loop seeds one
generator per (run seed, epoch, position) and a resumed run sees exactly the same pixels as an uninterrupted one.

Conventions (the dataset's, see the README's dataset section):

- ``image`` is (H, W) uint8 grey. RGB/RGBA sources are converted to luminance when decoded.
- ``boxes`` are (N, 4) float32 ``xyxy`` pixel extents, 0-based with an exclusive max (``x2 - x1`` = width in pixels).
- ``points`` are (N, 2) float32 ``(x, y)`` 0-based pixel indices (column, row), one per target, not matched to boxes.
- ``target_mask`` / ``sky_mask`` are (H, W) bool.

BAG-CP (background-aware Gaussian copy-paste, ``SkyCopyPaste`` in the original code, see ``docs``/bafenet.md §3.3)
pastes clusters of synthetic targets from a second sample onto the sky of the first one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .sample import DetectionSample, to_grey  # to_grey re-exported: its home is the dataset row

__all__ = [
    "BagCopyPaste",
    "DetectionCollator",
    "DetectionSample",
    "TileTransform",
    "TrainTransform",
    "hflip",
    "resize",
    "resize_bilinear",
    "resize_nearest",
    "scaled_crop",
    "row_boxes",
    "row_name",
    "sample_from_row",
    "to_grey",
    "to_coco_annotation",
]


def _to_mask(mask: Any) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array[..., 0]
    return array > 0


def row_name(row: Mapping[str, Any]) -> str:
    """The file stem of a dataset row: ``image_name`` (dataset 2.0.0; before, ``image_id`` held it)."""
    return str(row["image_name"] if "image_name" in row else row.get("image_id", ""))


def row_boxes(row: Mapping[str, Any], dtype: Any = np.float64) -> np.ndarray:
    """A row's ``objects.bbox`` (COCO x, y, w, h) as (N, 4) ``xyxy`` in the dataset's convention (0-based, exclusive
    max: the DenseSIRST XML values). The one box conversion of training, evaluation and statistics."""
    bbox = np.asarray(row["objects"]["bbox"], dtype=dtype).reshape(-1, 4)
    return np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)


def sample_from_row(row: dict[str, Any]) -> DetectionSample:
    """Decode one row of the built dataset (``image``, ``objects.bbox`` COCO xywh, ``points``, masks) to a sample."""
    image_id = row_name(row)
    image = to_grey(row["image"])
    boxes = row_boxes(row, np.float32)
    points = np.asarray(row.get("points") or np.zeros((0, 2)), dtype=np.float32).reshape(-1, 2)
    for key in ("target_mask", "sky_mask"):
        if row.get(key) is None:
            raise ValueError(f"dataset row {image_id!r} has no {key!r}: BAG-CP and the sky loss need it")
    return DetectionSample(
        image=image,
        boxes=boxes,
        points=points,
        target_mask=_to_mask(row["target_mask"]),
        sky_mask=_to_mask(row["sky_mask"]),
        image_id=image_id,
    )


# ----------------------------------------------------------------------------------------------------------------
# Geometry


def _source_coordinates(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centre sampling (OpenCV ``INTER_LINEAR``): left index, right index, right weight per output px.
    (The torch copy in the model's remote code is ``tiling_bafenet.resample_axis``; see :func:`resize_bilinear`.)"""
    scale = in_size / out_size
    coords = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    coords = np.clip(coords, 0, in_size - 1)
    left = np.floor(coords).astype(np.int64)
    right = np.minimum(left + 1, in_size - 1)
    return left, right, (coords - left).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W) or (H, W, C) uint8 array, no antialiasing (like ``cv2.INTER_LINEAR``).

    The numpy twin of the model's torch resampling (the image processor's ``F.interpolate(..., mode="bilinear",
    align_corners=False)``, ``tiling_bafenet.resample_axis`` / ``scaled_window``), on purpose: this module is
    numpy-only and sits above the model in the layers (it may not import ``models/``), and the model's files ship as
    remote code that may not import ``bafenet``. The sampling is the same (half-pixel centres, edge clamping); this
    one rounds to the input's dtype. tests/test_transforms.py checks that the two agree.
    """
    if image.shape[:2] == (height, width):
        return image.copy()
    top, bottom, wy = _source_coordinates(height, image.shape[0])
    left, right, wx = _source_coordinates(width, image.shape[1])
    data = image.astype(np.float32)
    extra = (1,) * (data.ndim - 2)
    wy = wy.reshape(-1, 1, *extra)
    rows = data[top] * (1 - wy) + data[bottom] * wy
    wx = wx.reshape(1, -1, *extra)
    out = rows[:, left] * (1 - wx) + rows[:, right] * wx
    return np.clip(np.rint(out), 0, 255).astype(image.dtype)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize sampling each output pixel's centre (like PIL ``NEAREST``)."""
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def resize(sample: DetectionSample, height: int, width: int) -> DetectionSample:
    """Resize to ``height`` x ``width`` without keeping the aspect ratio (as the original pipeline).

    Image bilinear, masks nearest, boxes scaled as continuous extents, points as pixel centres.
    """
    sy, sx = height / sample.height, width / sample.width
    boxes = sample.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
    points = (sample.points + 0.5) * np.array([sx, sy], dtype=np.float32) - 0.5
    points = np.clip(points, 0, np.array([width - 1, height - 1], dtype=np.float32))
    return replace(
        sample,
        image=resize_bilinear(sample.image, height, width),
        boxes=boxes,
        points=points,
        target_mask=resize_nearest(sample.target_mask, height, width),
        sky_mask=resize_nearest(sample.sky_mask, height, width),
    )


def scaled_shape(sample: DetectionSample, scale: float) -> tuple[int, int]:
    """(height, width) of ``sample`` scaled by ``scale`` with its aspect kept: the rounding of the image processor's
    tiles mode (``configuration_bafenet.scaled_size``, which the self-contained remote code keeps to itself)."""
    return max(1, int(round(sample.height * scale))), max(1, int(round(sample.width * scale)))


def scaled_crop(sample: DetectionSample, scale: float, top: int, left: int, size: int) -> DetectionSample:
    """The ``size`` x ``size`` window at (``top``, ``left``) of the sample scaled by ``scale`` (aspect ratio kept),
    computed for the window's pixels only: the same half-pixel bilinear sampling as scaling the whole image (the
    image processor's tiles mode), padded with 0 (image and masks) past the bottom/right edge like its padding.

    Boxes are clipped to the window and kept when at least half of their area lies inside; points outside are
    dropped; ``original_size`` becomes the window's.
    """
    out_h, out_w = scaled_shape(sample, scale)
    rows = np.arange(top, min(top + size, out_h))
    cols = np.arange(left, min(left + size, out_w))
    y_lo, y_hi, wy = (a[rows] for a in _source_coordinates(out_h, sample.height))
    x_lo, x_hi, wx = (a[cols] for a in _source_coordinates(out_w, sample.width))
    data = sample.image.astype(np.float32)
    band = data[y_lo] * (1 - wy[:, None]) + data[y_hi] * wy[:, None]
    image = np.zeros((size, size), np.uint8)
    image[: len(rows), : len(cols)] = np.clip(np.rint(band[:, x_lo] * (1 - wx) + band[:, x_hi] * wx), 0, 255)
    near_rows = np.minimum(((rows + 0.5) * sample.height / out_h).astype(np.int64), sample.height - 1)
    near_cols = np.minimum(((cols + 0.5) * sample.width / out_w).astype(np.int64), sample.width - 1)
    masks = []
    for mask in (sample.target_mask, sample.sky_mask):
        window = np.zeros((size, size), bool)
        window[: len(rows), : len(cols)] = mask[near_rows[:, None], near_cols[None, :]]
        masks.append(window)

    sx, sy = out_w / sample.width, out_h / sample.height
    boxes = sample.boxes * np.array([sx, sy, sx, sy], np.float32) - np.array([left, top, left, top], np.float32)
    clipped = np.clip(boxes, 0, size)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (visible > 0) & (visible >= 0.5 * area)
    points = (sample.points + 0.5) * np.array([sx, sy], np.float32) - 0.5 - np.array([left, top], np.float32)
    inside = (points >= 0).all(1) & (points[:, 0] <= size - 1) & (points[:, 1] <= size - 1)
    return replace(sample, image=image, boxes=clipped[keep], points=points[inside], target_mask=masks[0],
                   sky_mask=masks[1], original_size=(size, size))


def hflip(sample: DetectionSample) -> DetectionSample:
    """Mirror left-right: image, masks, boxes (half-open extents) and points (pixel indices) together."""
    width = sample.width
    boxes = sample.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - sample.boxes[:, 2], width - sample.boxes[:, 0]
    points = sample.points.copy()
    points[:, 0] = width - 1 - sample.points[:, 0]
    return replace(
        sample,
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        boxes=boxes,
        points=points,
        target_mask=np.ascontiguousarray(sample.target_mask[:, ::-1]),
        sky_mask=np.ascontiguousarray(sample.sky_mask[:, ::-1]),
    )


# ----------------------------------------------------------------------------------------------------------------
# BAG-CP


@dataclass
class BagCopyPaste:
    """Sky-aware clustered Gaussian copy-paste (BAG-CP), bafenet.md §3.3.

    A random number (uniform in 0..``min(n_src, max_objects)``) of the source's boxes is pasted onto the sky of the
    destination, in clusters of ``cluster_size`` objects that share a ``window`` x ``window`` all-sky, target-free
    window (shrunk by ``window_shrink`` px up to ``max_window_shrinks`` times; if no window is found the cluster's
    objects are placed one by one anywhere on the sky). Each paste keeps its source box size (cropped with both ends
    truncated, :meth:`crop_extent`; boxes with a side ``>= large_object_size`` are shrunk to ``shrunk_size``
    squared) and adds ``gain * G * patch`` to the destination, where ``G`` is a random rotated anisotropic Gaussian
    normalised to [0, 1] and ``patch`` the source pixels.

    Guarantees (tested): a pasted box lies entirely on sky and keeps ``margin`` px away from every existing target,
    earlier pastes included; pixels change only inside the pasted boxes; each pasted box gets a point (its brightest
    added pixel) inside it and its rectangle is added to ``target_mask`` (``paste_by_box=True`` as in the original).

    Deviation from the original: where it accepts the last random candidate after ``max_tries`` failed tries (which
    may overlap a target or leave the sky), this object is not pasted. Each new cluster starts from the full window.
    """

    probability: float = 1.0
    max_objects: int = 100
    cluster_size: int = 5
    window: int = 25
    window_shrink: int = 3
    max_window_shrinks: int = 6
    max_tries: int = 101
    margin: int = 1
    large_object_size: int = 10
    shrunk_size: int = 7
    sigma_range: tuple[float, float] = (0.3, 0.6)
    mu_range: tuple[float, float] = (0.0, 0.2)
    theta_range_deg: tuple[int, int] = (-90, 90)
    gain_range: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"BagCopyPaste.probability must be in [0, 1], got {self.probability}")
        for name in ("cluster_size", "window", "max_tries", "shrunk_size", "large_object_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"BagCopyPaste.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("window_shrink", "max_window_shrinks", "margin", "max_objects"):
            if getattr(self, name) < 0:
                raise ValueError(f"BagCopyPaste.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("sigma_range", "mu_range", "theta_range_deg", "gain_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"BagCopyPaste.{name} must be (low, high) with low <= high, got {(low, high)}")
        if self.sigma_range[0] <= 0:
            raise ValueError(f"BagCopyPaste.sigma_range must be positive, got {self.sigma_range}")

    # -- placement ------------------------------------------------------------------------------------------------
    def _is_free(self, row: int, col: int, h: int, w: int, sky: np.ndarray, occupied: np.ndarray) -> bool:
        if row < 0 or col < 0 or row + h > sky.shape[0] or col + w > sky.shape[1]:
            return False
        if not sky[row : row + h, col : col + w].all():
            return False
        m = self.margin
        return not occupied[max(row - m, 0) : row + h + m, max(col - m, 0) : col + w + m].any()

    def _choose_window(
        self, rng: np.random.Generator, sky: np.ndarray, occupied: np.ndarray, sky_pixels: np.ndarray
    ) -> tuple[int, int, int] | None:
        height, width = sky.shape
        for attempt in range(self.max_window_shrinks + 1):
            size = self.window - attempt * self.window_shrink
            if size < 1:
                break
            if size > height or size > width:
                continue
            for _ in range(self.max_tries):
                row, col = divmod(int(sky_pixels[rng.integers(len(sky_pixels))]), width)
                row, col = min(row, height - size), min(col, width - size)
                if sky[row : row + size, col : col + size].all() and not occupied[
                    row : row + size, col : col + size
                ].any():
                    return row, col, size
        return None

    def _place_in_window(
        self, rng: np.random.Generator, window: tuple[int, int, int], h: int, w: int, sky, occupied
    ) -> tuple[int, int] | None:
        row0, col0, size = window
        if h > size or w > size:
            return None
        for _ in range(self.max_tries):
            row = row0 + int(rng.integers(size - h + 1))
            col = col0 + int(rng.integers(size - w + 1))
            if self._is_free(row, col, h, w, sky, occupied):
                return row, col
        return None

    def _place_anywhere(
        self, rng: np.random.Generator, h: int, w: int, sky, occupied, sky_pixels
    ) -> tuple[int, int] | None:
        for _ in range(self.max_tries):
            row, col = divmod(int(sky_pixels[rng.integers(len(sky_pixels))]), sky.shape[1])
            if self._is_free(row, col, h, w, sky, occupied):
                return row, col
        return None

    @staticmethod
    def crop_extent(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
        """Integer pixel extent ``(x1, y1, x2, y2)`` of a source box (float ``xyxy`` at the resized scale).

        Both ends are truncated, as the original's ``int()``: ``int(x2) - int(x1)`` equals the float width on
        average, so pasted targets keep the size of the real ones (rounding the ends outwards, ``floor(x1)`` ..
        ``ceil(x2)``, made them about 1 px larger). Every extent keeps at least one pixel and stays in the image.
        """
        x1, y1 = min(max(int(box[0]), 0), width - 1), min(max(int(box[1]), 0), height - 1)
        x2, y2 = min(max(int(box[2]), x1 + 1), width), min(max(int(box[3]), y1 + 1), height)
        return x1, y1, x2, y2

    # -- intensity ------------------------------------------------------------------------------------------------
    def gaussian(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A rotated anisotropic Gaussian on an ``height`` x ``width`` grid spanning [-1, 1]^2, min-max to [0, 1]."""
        sigma_x, sigma_y = rng.uniform(*self.sigma_range, size=2)
        mu_x, mu_y = -rng.uniform(*self.mu_range, size=2)
        theta = math.radians(int(rng.integers(self.theta_range_deg[0], self.theta_range_deg[1] + 1)))
        y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
        x, y = x - mu_x, y - mu_y
        xr = x * math.cos(theta) + y * math.sin(theta)
        yr = -x * math.sin(theta) + y * math.cos(theta)
        blob = np.exp(-(xr**2 / (2 * sigma_x**2) + yr**2 / (2 * sigma_y**2)))
        span = blob.max() - blob.min()
        return ((blob - blob.min()) / span if span > 0 else np.ones_like(blob)).astype(np.float32)

    # -- main -----------------------------------------------------------------------------------------------------
    def __call__(self, dst: DetectionSample, src: DetectionSample, rng: np.random.Generator) -> DetectionSample:
        """Return a copy of ``dst`` with targets from ``src`` pasted on its sky (``dst`` itself is not modified)."""
        if self.probability < 1.0 and rng.random() >= self.probability:
            return dst
        sky_pixels = np.flatnonzero(dst.sky_mask)
        if len(sky_pixels) == 0 or len(src.boxes) == 0:
            return dst
        n_paste = int(rng.integers(0, min(len(src.boxes), self.max_objects) + 1))
        if n_paste == 0:
            return dst
        chosen = rng.choice(len(src.boxes), size=n_paste, replace=False)

        image = dst.image.astype(np.float32)
        occupied = dst.target_mask.copy()
        new_boxes, new_points = [], []
        window = None
        for k, index in enumerate(chosen):
            x1, y1, x2, y2 = self.crop_extent(src.boxes[index], src.height, src.width)
            patch = src.image[y1:y2, x1:x2]
            if patch.shape[0] >= self.large_object_size or patch.shape[1] >= self.large_object_size:
                patch = resize_bilinear(patch, self.shrunk_size, self.shrunk_size)
            h, w = patch.shape

            if k % self.cluster_size == 0:
                window = self._choose_window(rng, dst.sky_mask, occupied, sky_pixels)
            spot = self._place_in_window(rng, window, h, w, dst.sky_mask, occupied) if window else None
            if spot is None:
                spot = self._place_anywhere(rng, h, w, dst.sky_mask, occupied, sky_pixels)
            if spot is None:
                continue
            row, col = spot
            added = rng.uniform(*self.gain_range) * self.gaussian(rng, h, w) * patch.astype(np.float32)
            region = image[row : row + h, col : col + w]
            region[...] = np.minimum(255.0, region + added)
            occupied[row : row + h, col : col + w] = True
            peak_row, peak_col = np.unravel_index(int(np.argmax(added)), added.shape)
            new_boxes.append([col, row, col + w, row + h])
            new_points.append([col + peak_col, row + peak_row])

        if not new_boxes:
            return dst
        return replace(
            dst,
            image=np.floor(image).astype(np.uint8),
            boxes=np.concatenate([dst.boxes, np.asarray(new_boxes, dtype=np.float32)]),
            points=np.concatenate([dst.points, np.asarray(new_points, dtype=np.float32)]),
            target_mask=occupied,
        )


# ----------------------------------------------------------------------------------------------------------------
# Pipeline and collation


@dataclass
class TrainTransform:
    """The training pipeline of one sample: resize -> random h-flip -> BAG-CP with a resized, flipped source.

    ``size`` is (height, width), normally the model's ``image_size`` squared. ``copy_paste=None`` disables BAG-CP.
    """

    size: tuple[int, int]
    flip_probability: float = 0.5
    copy_paste: BagCopyPaste | None = field(default_factory=BagCopyPaste)

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"TrainTransform.size must be (height, width) > 0, got {self.size}")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"TrainTransform.flip_probability must be in [0, 1], got {self.flip_probability}")

    def _geometric(self, sample: DetectionSample, rng: np.random.Generator) -> DetectionSample:
        sample = resize(sample, *self.size)
        return hflip(sample) if rng.random() < self.flip_probability else sample

    def __call__(
        self, sample: DetectionSample, source: DetectionSample | None, rng: np.random.Generator
    ) -> DetectionSample:
        sample = self._geometric(sample, rng)
        if self.copy_paste is not None and source is not None:
            sample = self.copy_paste(sample, self._geometric(source, rng), rng)
        return sample


@dataclass
class TileTransform:
    """The training pipeline of the tiles and zoom input modes: a ``size`` squared window of the sample scaled by
    ``scale`` (:func:`scaled_crop`), placed around a random target with probability ``target_probability`` (anywhere
    in the image otherwise, which gives pure-background windows too) -> random h-flip -> BAG-CP with a target window
    of the source, scaled alike (so pasted targets keep the scale of real ones).

    Zoom mode: with probability ``coarse_probability`` the window is taken at ``coarse_scale`` instead (the scale of
    the model's coarse whole-image pass), so one model learns both passes: proposals at the coarse scale, detection
    at ``scale``; with probability ``frame_probability`` it is a whole-frame view for the sky (the image scaled so
    that its longer side is ``frame_size``, as the model's sky pass sees it; ``sky_only``: its targets, a pixel or
    less at that scale, train no detection)."""

    size: int
    scale: float
    flip_probability: float = 0.5
    copy_paste: BagCopyPaste | None = field(default_factory=BagCopyPaste)
    target_probability: float = 0.8
    coarse_scale: float | None = None
    coarse_probability: float = 0.0
    frame_size: int | None = None
    frame_probability: float = 0.0

    def __post_init__(self) -> None:
        if self.size < 1 or not self.scale > 0 or not (self.coarse_scale is None or self.coarse_scale > 0):
            raise ValueError(f"TileTransform needs size >= 1 and scales > 0, got {self.size}, {self.scale}, "
                             f"{self.coarse_scale}")
        if self.frame_size is not None and self.frame_size < 1:
            raise ValueError(f"TileTransform.frame_size must be >= 1 or None, got {self.frame_size}")
        for name in ("flip_probability", "target_probability", "coarse_probability", "frame_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TileTransform.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.coarse_probability + self.frame_probability > 1.0:
            raise ValueError("TileTransform: coarse_probability + frame_probability must be <= 1, got "
                             f"{self.coarse_probability} + {self.frame_probability}")

    def window(self, sample: DetectionSample, rng: np.random.Generator, target_probability: float,
               scale: float | None = None) -> DetectionSample:
        """A random ``size`` squared window of the sample scaled by ``scale`` (default ``self.scale``; see the class
        docstring)."""
        scale = self.scale if scale is None else scale
        out_h, out_w = scaled_shape(sample, scale)
        max_top, max_left = max(out_h - self.size, 0), max(out_w - self.size, 0)
        if len(sample.boxes) and rng.random() < target_probability:
            x1, y1, x2, y2 = sample.boxes[int(rng.integers(len(sample.boxes)))] * scale
            top = int(rng.integers(int(np.clip(np.ceil(y2) - self.size, 0, max_top)),
                                   int(np.clip(np.floor(y1), 0, max_top)) + 1))
            left = int(rng.integers(int(np.clip(np.ceil(x2) - self.size, 0, max_left)),
                                    int(np.clip(np.floor(x1), 0, max_left)) + 1))
        else:
            top, left = int(rng.integers(max_top + 1)), int(rng.integers(max_left + 1))
        return scaled_crop(sample, scale, top, left, self.size)

    def view(self, rng: np.random.Generator) -> str:
        """Which view the next window is: ``"fine"``, ``"coarse"`` or ``"frame"`` (no draw in tiles mode)."""
        if self.coarse_scale is None and self.frame_size is None:
            return "fine"
        draw = rng.random()
        if self.coarse_scale is not None and draw < self.coarse_probability:
            return "coarse"
        if self.frame_size is not None and draw < self.coarse_probability + self.frame_probability:
            return "frame"
        return "fine"

    def __call__(
        self, sample: DetectionSample, source: DetectionSample | None, rng: np.random.Generator
    ) -> DetectionSample:
        view = self.view(rng)
        if view == "frame":
            scale = self.frame_size / max(sample.height, sample.width)
            sample = replace(self.window(sample, rng, 0.0, scale), sky_only=True)
        else:
            scale = self.coarse_scale if view == "coarse" else self.scale
            sample = self.window(sample, rng, self.target_probability, scale)
        if rng.random() < self.flip_probability:
            sample = hflip(sample)
        if self.copy_paste is not None and source is not None and view != "frame":
            sample = self.copy_paste(sample, self.window(source, rng, 1.0, scale), rng)
        return sample


def to_coco_annotation(sample: DetectionSample, image_id: int = 0) -> dict[str, Any]:
    """The sample's boxes as the COCO detection annotation the image processor takes (in the sample's pixels)."""
    annotations = []
    for x1, y1, x2, y2 in sample.boxes.tolist():
        w, h = x2 - x1, y2 - y1
        annotations.append({"bbox": [x1, y1, w, h], "category_id": 0, "area": w * h, "iscrowd": 0})
    return {"image_id": image_id, "annotations": annotations}


@dataclass
class DetectionCollator:
    """Turn a list of transformed samples into processor-ready model inputs (``pixel_values`` + ``labels``).

    The samples are already at the model size, so the processor is called with ``do_resize=False``; it normalises
    the images and converts the boxes to normalised cxcywh, and the sky masks to the ``labels[i]["sky_mask"]``;
    a ``sky_only`` sample's labels say ``"sky_only": True`` (the model trains only its sky on it).
    """

    processor: Any

    def __call__(self, samples: Sequence[DetectionSample]) -> dict[str, Any]:
        images = [np.repeat(s.image[:, :, None], 3, axis=2) for s in samples]
        annotations = [to_coco_annotation(s, i) for i, s in enumerate(samples)]
        sky_masks = [s.sky_mask.astype(np.uint8) for s in samples]
        batch = self.processor(
            images=images, annotations=annotations, sky_masks=sky_masks, do_resize=False, return_tensors="pt"
        )
        for label, sample in zip(batch["labels"], samples):
            if sample.sky_only:
                label["sky_only"] = True
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}
