"""The `object-detection` pipeline for BAFE-Net, shipped as remote code (`config.custom_pipelines`).

`pipeline("object-detection", model=..., trust_remote_code=True)` builds this class instead of the stock
`ObjectDetectionPipeline` (with bafenet installed, no remote code: `pipeline("object-detection", model=...,
pipeline_class=BafeNetObjectDetectionPipeline, trust_remote_code=False)`), which differs in two points only:

* it knows the model, so transformers' "is not supported for object-detection" ERROR (the stock check only looks at
  transformers' own model list) is not logged;
* the default `threshold` is the model's stored operating point, `config.operating_threshold` (chosen by the trainer
  as the best-F1 score on validation), instead of transformers' 0.5, far above this model's useful scores. A model
  without one falls back to 0.5. An explicit `threshold=` always wins. The threshold applies to the final score
  (sigmoid(cls) x sigmoid(centerness)), as the at-a-score metrics of `bafenet evaluate`.

Like the stock pipeline it returns boxes rounded to whole pixels (`int`); `BafeNetImageProcessor.
post_process_object_detection` gives the unrounded float boxes.
"""

from __future__ import annotations

from typing import Any

from transformers.pipelines.object_detection import ObjectDetectionPipeline

# The threshold of a model without a stored operating point: transformers' default, and the same 0.5 as
# `bafenet.evaluation.FALLBACK_OPERATING_THRESHOLD` (`bafenet predict` / `evaluate`). A second copy, not an import:
# this file ships as remote code, which may import only its siblings, transformers and torch (bafenet need not be
# installed); tests/test_thresholds.py checks that the two are equal.
FALLBACK_THRESHOLD = 0.5


class BafeNetObjectDetectionPipeline(ObjectDetectionPipeline):
    """`ObjectDetectionPipeline` whose default threshold is `model.config.operating_threshold`."""

    def check_model_type(self, supported_models: Any) -> None:
        if type(self.model).__name__ != "BafeNetForObjectDetection":
            super().check_model_type(supported_models)

    @property
    def default_threshold(self) -> float:
        value = getattr(self.model.config, "operating_threshold", None)
        return FALLBACK_THRESHOLD if value is None else float(value)

    def postprocess(self, model_outputs: Any, threshold: float | None = None) -> list[dict[str, Any]]:
        """Detections whose final score (sigmoid(cls) x sigmoid(centerness)) is >= ``threshold``: the processor's
        threshold acts on sigmoid(cls) alone, the operating point on the final score (as `bafenet evaluate`)."""
        threshold = self.default_threshold if threshold is None else float(threshold)
        return [d for d in super().postprocess(model_outputs, threshold) if d["score"] >= threshold]


__all__ = ["BafeNetObjectDetectionPipeline"]
