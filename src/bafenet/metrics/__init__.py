"""Evaluation metrics for infrared small-target detection, each with its convention written down.

* :mod:`bafenet.metrics.box`: VOC AP (mmdet-exact mAP07/mAP12, recall, P/R/F1) and COCO AP (faster-coco-eval).
* :mod:`bafenet.metrics.pixel`: IoU, nIoU, Pd, Fa with BasicIRSTD semantics, and sky-segmentation IoU.
* :mod:`bafenet.metrics.points`: point localisation against the ``points`` labels (optimal matching, 3 px).
* :mod:`bafenet.metrics.render`: boxes -> masks and box centres -> points, in the dataset's conventions.
"""

from .box import coco_detection_metrics, voc_detection_metrics
from .pixel import PixelMetrics, SkyIoU, pixel_metrics
from .points import point_metrics
from .render import box_centers, boxes_to_mask

__all__ = [
    "PixelMetrics",
    "SkyIoU",
    "box_centers",
    "boxes_to_mask",
    "coco_detection_metrics",
    "pixel_metrics",
    "point_metrics",
    "voc_detection_metrics",
]
