"""The one sample type: an image with its boxes, points and masks (``DetectionSample``), and the one grey
conversion (``to_grey``) of the devkit reader, the samples, the statistics and prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DetectionSample", "to_grey"]


@dataclass
class DetectionSample:
    """One image with all its labels, in the dataset's conventions: the one sample type of the devkit reader,
    the training transforms and the statistics.

    - ``image`` (H, W) uint8 grey (RGB/RGBA sources converted to luminance when decoded);
    - ``boxes`` (N, 4) float32 ``xyxy`` pixel extents, 0-based with an exclusive max (the DenseSIRST XML values);
    - ``points`` (M, 2) float32 ``(x, y)`` 0-based pixel indices, one per target, not matched to boxes;
    - ``target_mask`` / ``sky_mask`` (H, W) bool.
    """

    image: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    target_mask: np.ndarray
    sky_mask: np.ndarray
    image_id: str = ""
    original_size: tuple[int, int] | None = None  # (height, width) before any resize
    image_path: Path | None = None  # the devkit file it was read from, when it was
    split: str = ""  # where it comes from (statistics report it)
    sky_only: bool = False  # a training view whose targets train no detection (the zoom mode's whole-frame sky view)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
        self.target_mask = np.asarray(self.target_mask).astype(bool, copy=False)
        self.sky_mask = np.asarray(self.sky_mask).astype(bool, copy=False)
        name = f"sample {self.image_id!r}"
        if self.image.ndim != 2 or self.image.dtype != np.uint8:
            raise ValueError(f"{name}: image must be (H, W) uint8 grey, got {self.image.shape} {self.image.dtype}")
        for mask_name in ("target_mask", "sky_mask"):
            mask = getattr(self, mask_name)
            if mask.shape != self.image.shape:
                raise ValueError(f"{name}: {mask_name} is {mask.shape}, the image is {self.image.shape}")
        if self.original_size is None:
            self.original_size = (self.height, self.width)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def to_grey(image: Any) -> np.ndarray:
    """PIL image or array (L, LA, RGB, RGBA, I;16) -> (H, W) uint8 luminance (ITU-R 601, as PIL's ``convert("L")``)."""
    if hasattr(image, "convert"):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image.convert("L"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 3:
        rgb = array[..., :3].astype(np.float32)
        array = np.rint(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    return np.clip(array, 0, 255).astype(np.uint8)
