"""What the dataset plots and the prediction drawings share: the colours of each kind of mark, box arrays, and the
densest-cluster window a zoom panel shows. Numpy only, below both `bafenet.data.stats` and `bafenet.visualize`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PREDICTION_COLOR = (255, 64, 32)  # red-orange: predictions
GROUND_TRUTH_COLOR = (32, 230, 64)  # green: ground truth
SKY_COLOR = (40, 140, 255)  # blue tint: sky region
INSET_FRAME_COLOR = (255, 230, 0)  # yellow: where the zoom inset comes from

__all__ = ["PREDICTION_COLOR", "GROUND_TRUTH_COLOR", "SKY_COLOR", "INSET_FRAME_COLOR", "as_boxes", "densest_cluster"]


def as_boxes(boxes: np.ndarray | Sequence | None) -> np.ndarray:
    """``boxes`` (array, list, torch tensor or None) as a float32 (N, 4) array."""
    if boxes is None:
        return np.zeros((0, 4), dtype=np.float32)
    if hasattr(boxes, "detach"):  # a torch tensor, without importing torch
        boxes = boxes.detach().cpu().numpy()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return boxes


def densest_cluster(
    boxes: np.ndarray, window: int, image_size: tuple[int, int], weights: np.ndarray | None = None
) -> tuple[int, int, int, int] | None:
    """The ``window`` x ``window`` square (x0, y0, x1, y1) that holds the most box centres, clamped to the image.

    Candidate squares are centred on each box centre (O(N^2), N <= a few hundred); ties go to the larger sum of
    ``weights`` (e.g. scores). The chosen square is re-centred on the mean of the centres it holds.
    ``image_size`` is (height, width). Returns None when there are no boxes.
    """
    boxes = as_boxes(boxes)
    if len(boxes) == 0:
        return None
    height, width = image_size
    window = int(max(1, min(window, height, width)))
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    weights = np.ones(len(boxes), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
    inside = np.all(np.abs(centres[:, None, :] - centres[None, :, :]) <= window / 2, axis=-1)  # (N, N)
    counts = inside.sum(1)
    best_score = counts + (inside * weights[None, :]).sum(1) / (weights.sum() + 1.0)  # count first, weight ties
    best = int(np.argmax(best_score))
    cx, cy = centres[inside[best]].mean(0)
    x0 = int(np.clip(round(cx - window / 2), 0, width - window))
    y0 = int(np.clip(round(cy - window / 2), 0, height - window))
    return x0, y0, x0 + window, y0 + window
