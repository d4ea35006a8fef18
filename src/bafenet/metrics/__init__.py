"""Evaluation metrics for infrared small-target detection, each with its convention written down.

* :mod:`bafenet.metrics.box`: VOC AP (mmdet-exact mAP07/mAP12, recall, P/R/F1) and COCO AP (faster-coco-eval).
"""

from .box import coco_detection_metrics, voc_detection_metrics

__all__ = ["coco_detection_metrics", "voc_detection_metrics"]
