"""DenseSIRST box metrics as a Hugging Face `evaluate` module: VOC mAP07 / mAP12 / recall (mmdet-exact) and COCO AP.

Load it from a checkout, offline::

    import evaluate
    metric = evaluate.load("./metrics/densesirst_voc")
    metric.add_batch(predictions=[{"image_id": "Misc_1", "boxes": [[203, 36, 206, 40]], "scores": [0.9]}],
                     references=[{"image_id": "Misc_1", "boxes": [[203, 36, 206, 40]]}])
    metric.compute()  # {"mAP07": 1.0, "mAP12": 1.0, "recall": 1.0, ..., "coco_mAP": 1.0, ...}

The numbers come from `bafenet.metrics.box` (one implementation for the library, the CLI and this module), so the
`bafenet` package must be installed.
"""

import datasets
import evaluate

from bafenet.metrics.box import coco_detection_metrics, voc_detection_metrics

_DESCRIPTION = """\
Box-level detection metrics for DenseSIRST (single class "target"). VOC AP at an IoU threshold (default 0.5) exactly
as mmdetection's eval_map: mAP07 = 11-point AP, mAP12 = area AP, recall = final recall over all detections, plus
precision/recall/F1 at a score threshold. `legacy_plus_one=True` (default) adds 1 to widths and heights in areas and
IoU like mmdet's legacy coordinates, which produced the BAFE-Net paper's numbers. COCO AP@[.5:.95], AP50, AP75,
AP_small, ... come from faster-coco-eval (no +1). Boxes are xyxy in original-image pixels, DenseSIRST XML
convention (0-based, x_max/y_max exclusive), the same on both sides.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one dict per image: "image_id" (str), "boxes" (list of [x1, y1, x2, y2]), "scores" (list of float).
    references: one dict per image: "image_id" (str), "boxes" (list of [x1, y1, x2, y2]). Every image must appear
        on both sides (empty lists for images without boxes); order does not matter.
    iou_threshold (float, default 0.5), legacy_plus_one (bool, default True), score_threshold (float, default 0.5):
        see bafenet.metrics.box.voc_detection_metrics.
    coco (bool, default True): also compute the COCO metrics.
Returns:
    dict with mAP07, mAP12, recall, precision, f1, precision_at_score, recall_at_score, f1_at_score, best_f1,
    num_images, num_targets, num_detections, ... and, when coco=True, coco_mAP, coco_AP50, coco_AP75, coco_AP_small, ...
Examples:
    >>> metric = evaluate.load("./metrics/densesirst_voc")
    >>> result = metric.compute(predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
    ...                         references=[{"image_id": "a", "boxes": [[0, 0, 4, 4]]}])
    >>> result["mAP07"], result["mAP12"], result["recall"]
    (1.0, 1.0, 1.0)
"""

_CITATION = """\
@article{bafenet2024,
  title={Background-Aware Feature Exchange for Dense Small Infrared Target Detection (BAFE-Net / DenseSIRST)},
  journal={arXiv preprint arXiv:2407.20078},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DensesirstVoc(evaluate.Metric):
    def _info(self):
        box = datasets.List(datasets.List(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "image_id": datasets.Value("string"),
                        "boxes": box,
                        "scores": datasets.List(datasets.Value("float32")),
                    },
                    "references": {"image_id": datasets.Value("string"), "boxes": box},
                }
            ),
            reference_urls=["https://arxiv.org/abs/2407.20078", "https://github.com/GrokCV/DenseSIRST"],
        )

    def _compute(self, predictions, references, iou_threshold=0.5, legacy_plus_one=True, score_threshold=0.5, coco=True):
        result = voc_detection_metrics(
            predictions,
            references,
            iou_threshold=iou_threshold,
            legacy_plus_one=legacy_plus_one,
            score_threshold=score_threshold,
        )
        if coco:
            result.update(coco_detection_metrics(predictions, references))
        return result
