"""Turn box detections into the masks and points that the pixel- and point-level metrics score.

Box convention: xyxy in original-image pixels, DenseSIRST XML style (0-based, ``x_max``/``y_max`` exclusive, so
column ``c`` spans the continuous interval ``[c, c + 1)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import check_boxes

__all__ = ["box_centers", "boxes_to_mask"]


def boxes_to_mask(boxes: Any, height: int, width: int) -> np.ndarray:
    """Rasterise xyxy boxes into an (H, W) bool mask: the union of the pixels each box covers.

    A pixel (column ``c``, row ``r``) is covered when its centre ``(c + 0.5, r + 0.5)`` lies inside the half-open box
    ``[x1, x2) x [y1, y2)``; integer XML boxes therefore render exactly their annotated pixels. A
    box thinner than one pixel still covers the pixel that holds its centre, so no detection disappears. Boxes are
    clipped to the image.
    """
    boxes = check_boxes(boxes, "boxes_to_mask")
    if height <= 0 or width <= 0:
        raise ValueError(f"boxes_to_mask: image size must be positive, got {height}x{width}")
    mask = np.zeros((height, width), dtype=bool)
    if len(boxes) == 0:
        return mask
    center_x = np.floor((boxes[:, 0] + boxes[:, 2]) / 2)
    center_y = np.floor((boxes[:, 1] + boxes[:, 3]) / 2)
    # pixel c is covered when x1 <= c + 0.5 < x2, i.e. c in [ceil(x1 - 0.5), ceil(x2 - 0.5))
    x1 = np.minimum(np.ceil(boxes[:, 0] - 0.5), center_x)
    y1 = np.minimum(np.ceil(boxes[:, 1] - 0.5), center_y)
    x2 = np.maximum(np.ceil(boxes[:, 2] - 0.5), center_x + 1)
    y2 = np.maximum(np.ceil(boxes[:, 3] - 0.5), center_y + 1)
    x1, x2 = np.clip(x1, 0, width).astype(int), np.clip(x2, 0, width).astype(int)
    y1, y2 = np.clip(y1, 0, height).astype(int), np.clip(y2, 0, height).astype(int)
    for a, b, c, d in zip(x1, y1, x2, y2):
        mask[b:d, a:c] = True
    return mask


def box_centers(boxes: Any) -> np.ndarray:
    """(N, 2) box centres as (x, y) in *pixel-index* coordinates, the convention of the ``points`` labels.

    Pixel-index coordinates put the centre of pixel ``c`` at ``c`` (the labels are 0-based integer col/row), while
    XML boxes put it at ``c + 0.5``; hence centre = ``((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5)``. A box covering
    exactly columns 203..205 (XML 203..206) has centre x = 204.
    """
    boxes = check_boxes(boxes, "box_centers")
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - 0.5, (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5], axis=1)
