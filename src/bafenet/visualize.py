"""Drawings that keep infrared small targets visible: thick box outlines, a tinted sky region and a zoom inset.

Targets in DenseSIRST are 2-10 px wide; a 1-px rectangle drawn on a 640x512 image hides them. These helpers draw
each box *outside* the target (the outline grows outwards from the box edge), tint the sky region translucently, and
append a panel to the right of the image that shows the densest cluster of boxes magnified with nearest-neighbour
zoom (so pixels stay pixels), with the scores written next to the boxes.

Everything here works on numpy arrays / PIL images only (no torch), so evaluation and statistics code can reuse it:

>>> from bafenet.visualize import draw_detections
>>> overlay = draw_detections(image, boxes_xyxy, scores, sky_mask=sky, ground_truth=gt_boxes)
>>> overlay.save("overlay.png")

Box convention: ``xyxy`` in original pixels, 0-based, exclusive max (the DenseSIRST XML convention), so a box
``[3, 4, 6, 8]`` covers the pixel columns 3, 4, 5 and rows 4..7.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.drawing import (GROUND_TRUTH_COLOR, INSET_FRAME_COLOR, PREDICTION_COLOR, SKY_COLOR, as_boxes,
                           densest_cluster)

__all__ = [
    "to_rgb",
    "tint_region",
    "densest_cluster",
    "draw_boxes",
    "draw_detections",
    "PREDICTION_COLOR",
    "GROUND_TRUTH_COLOR",
    "SKY_COLOR",
]


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Return ``image`` as an (H, W, 3) uint8 array (grey is replicated, alpha dropped, 16-bit/float min-max scaled)."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = np.asarray(image, dtype=np.float32)
        else:
            return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    if array.dtype != np.uint8:
        is_float = np.issubdtype(array.dtype, np.floating)
        array = array.astype(np.float32)
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if is_float and low >= 0.0 and high <= 1.0:
            array = array * 255.0
        elif high > low:
            array = (array - low) * (255.0 / (high - low))
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.ascontiguousarray(array)


def tint_region(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int] = SKY_COLOR, alpha: float = 0.3) -> np.ndarray:
    """Blend ``color`` into the pixels of ``rgb`` (H, W, 3) where ``mask`` (H, W) is true; returns a new array."""
    mask = np.asarray(mask).astype(bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def draw_boxes(
    draw: ImageDraw.ImageDraw,
    boxes: np.ndarray,
    color: Sequence[int],
    width: int,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    labels: Sequence[str] | None = None,
    font: ImageFont.ImageFont | None = None,
) -> None:
    """Draw ``boxes`` (xyxy, exclusive max) with outlines of ``width`` px that grow *outwards* from the box edge.

    The boxes are mapped through ``(xy - offset) * scale`` first (for zoomed crops). The target pixels inside a box
    are never covered by its outline.
    """
    color = tuple(int(c) for c in color)
    for i, (x0, y0, x1, y1) in enumerate(as_boxes(boxes)):
        x0, x1 = (x0 - offset[0]) * scale, (x1 - offset[0]) * scale
        y0, y1 = (y0 - offset[1]) * scale, (y1 - offset[1]) * scale
        # PIL's rectangle includes its far edge; an exclusive-max box's last pixel ends at x1 - 1 (at scale 1).
        rect = [x0 - width, y0 - width, max(x0, x1 - 1) + width, max(y0, y1 - 1) + width]
        draw.rectangle(rect, outline=color, width=width)
        if labels is not None and font is not None:
            draw.text((rect[0], rect[1] - 1), labels[i], fill=color, font=font, anchor="lb")


def draw_detections(
    image: Image.Image | np.ndarray,
    boxes: np.ndarray | Sequence | None,
    scores: np.ndarray | Sequence | None = None,
    *,
    sky_mask: np.ndarray | None = None,
    ground_truth: np.ndarray | Sequence | None = None,
    line_width: int | None = None,
    inset: bool = True,
    inset_window: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """Overlay predictions (red-orange), ground truth (green) and the sky region (blue tint) on ``image``.

    Args:
        image: the original image (PIL or array; grey, RGB or RGBA).
        boxes: (N, 4) predicted boxes, xyxy in original pixels (exclusive max).
        scores: (N,) scores, written next to the boxes in the zoom panel.
        sky_mask: (H, W) bool sky region to tint.
        ground_truth: (M, 4) ground-truth boxes, xyxy in original pixels.
        line_width: outline width in px (default: 1 px per 256 px of the longer image side, at least 2).
        inset: append a zoom panel of the densest cluster of boxes on the right (same height as the image).
        inset_window: side of the square crop that is magnified (default: a quarter of the shorter image side).
        title: a caption written in the top-left corner.

    Returns:
        an RGB PIL image: the image with the overlays, and the zoom panel beside it when there is a box to show.
    """
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    if sky_mask is not None:
        rgb = tint_region(rgb, sky_mask)
    pred = as_boxes(boxes)
    gt = as_boxes(ground_truth)
    score_values = None
    if scores is not None:
        if hasattr(scores, "detach"):
            scores = scores.detach().cpu().numpy()
        score_values = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(score_values) != len(pred):
            raise ValueError(f"got {len(pred)} boxes but {len(score_values)} scores")
    line_width = line_width or max(2, round(max(height, width) / 256))

    main = Image.fromarray(rgb)
    draw = ImageDraw.Draw(main)
    draw_boxes(draw, gt, GROUND_TRUTH_COLOR, line_width)
    draw_boxes(draw, pred, PREDICTION_COLOR, line_width)

    window = inset_window or max(8, min(height, width) // 4)
    region = densest_cluster(pred if len(pred) else gt, window, (height, width), score_values if len(pred) else None)
    if not inset or region is None:
        _caption(main, title)
        return main

    x0, y0, x1, y1 = region
    draw.rectangle([x0 - 1, y0 - 1, x1, y1], outline=INSET_FRAME_COLOR, width=max(1, line_width // 2))
    _caption(main, title)
    side = height  # the panel is as tall as the image
    zoom = side / (x1 - x0)
    crop = Image.fromarray(rgb[y0:y1, x0:x1]).resize((side, side), Image.Resampling.NEAREST)
    panel_draw = ImageDraw.Draw(crop)
    zoom_width = max(2, round(line_width * 1.5))
    font = _font(max(10, side // 40))
    labels = [f"{s:.2f}" for s in score_values] if score_values is not None else None
    draw_boxes(panel_draw, gt, GROUND_TRUTH_COLOR, zoom_width, scale=zoom, offset=(x0, y0))
    draw_boxes(panel_draw, pred, PREDICTION_COLOR, zoom_width, scale=zoom, offset=(x0, y0), labels=labels, font=font)
    panel_draw.rectangle([0, 0, side - 1, side - 1], outline=INSET_FRAME_COLOR, width=max(2, line_width))
    panel_draw.text((6, side - 6), f"x{zoom:.1f} zoom of ({x0}, {y0})-({x1}, {y1})", fill=INSET_FRAME_COLOR,
                    font=font, anchor="lb")

    canvas = Image.new("RGB", (width + side, height))
    canvas.paste(main, (0, 0))
    canvas.paste(crop, (width, 0))
    return canvas


def _caption(image: Image.Image, title: str | None) -> None:
    if not title:
        return
    draw = ImageDraw.Draw(image)
    font = _font(max(10, image.height // 40))
    left, top, right, bottom = draw.textbbox((4, 4), title, font=font)
    draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=(0, 0, 0))
    draw.text((4, 4), title, fill=(255, 255, 255), font=font)
