"""The one inference loop, after the ``evaluation_loop`` of transformers' no-trainer examples: images in batches
through the image processor, the network (PyTorch or ONNX), the post-processing, back in each image's own pixels.

``bafenet evaluate`` (a dataset split), in-training validation (the same split loader, sharded by Accelerate and
gathered) and ``bafenet predict`` (image files) all run :func:`evaluation_loop`; they differ only in where the
images come from (:class:`SplitImages` for a split, a list for files) and what they do with the detections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data.transforms import row_name, to_grey

__all__ = ["InferenceCollator", "SplitImages", "detect", "detection_threshold_of", "evaluation_loop", "inference_loader",
           "model_forward", "model_inputs"]

Forward = Callable[[Mapping[str, Any]], Any]


def model_inputs(inputs: Mapping[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    """Processor output -> model keyword arguments on ``device``: ``pixel_values`` in the model's ``dtype`` and, in
    tiles mode, ``image_sizes`` (the one place the model's inputs are built)."""
    out = {"pixel_values": inputs["pixel_values"].to(device, dtype)}
    if inputs.get("image_sizes") is not None:
        out["image_sizes"] = inputs["image_sizes"].to(device)
    return out


def model_forward(model: Any, device: Any = None, dtype: Any = None) -> Forward:
    """``forward(inputs)`` for a PyTorch model: inputs moved to ``device`` / ``dtype`` (default: the model's)."""
    parameter = next(model.parameters())
    device = parameter.device if device is None else device
    dtype = parameter.dtype if dtype is None else dtype  # a half-precision model gets half-precision inputs
    return lambda inputs: model(**model_inputs(inputs, device, dtype))


def detection_threshold_of(processor: Any, value: float | None = None) -> float:
    """The detection cut to apply: ``value``, else the processor's ``detection_threshold`` (0.05, mmdet's
    ``score_thr``, for a processor saved before that field existed)."""
    return float(getattr(processor, "detection_threshold", 0.05) if value is None else value)


def detect(forward: Forward, processor: Any, inputs: Mapping[str, Any], target_sizes: Any, detection_threshold: float,
           sky: bool = False) -> list[dict[str, Any]]:
    """The inference step: ``forward(inputs)`` (the model or its ONNX graph on processor ``inputs``), the processor's
    post-processing at ``detection_threshold``, rescaled to ``target_sizes`` ((h, w) per image). Returns per image
    ``"boxes"`` (N, 4) float32 xyxy and ``"scores"`` (N,) as numpy, sorted by decreasing score (stable), and
    ``"sky_mask"`` (H, W) bool when ``sky``."""
    import torch

    with torch.inference_mode():
        outputs = forward(inputs)
        results = processor.post_process_object_detection(outputs, threshold=detection_threshold,
                                                           target_sizes=target_sizes)
        skies = processor.post_process_sky_segmentation(outputs, target_sizes=target_sizes) if sky else None
    found = []
    for i, result in enumerate(results):
        scores = result["scores"].detach().float().cpu().numpy().reshape(-1)
        order = np.argsort(-scores, kind="stable")
        found.append({"boxes": result["boxes"].detach().float().cpu().numpy().reshape(-1, 4)[order],
                      "scores": scores[order],
                      "sky_mask": None if skies is None else skies[i].detach().cpu().numpy().astype(bool)})
    return found


class SplitImages:
    """A dataset split's images for inference (a map-style dataset for `torch.utils.data.DataLoader`): item ``i``
    is ``(i, grey image)``, decoded like the training data; only the image column is decoded, and its size is checked
    against the row's ``width`` / ``height``."""

    def __init__(self, rows: Any) -> None:
        wanted = ("image", "image_id", "image_name", "width", "height")
        self.rows = rows.select_columns([c for c in wanted if c in rows.column_names])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        row = self.rows[index]
        image = row["image"]
        if "width" in row and (image.height, image.width) != (int(row["height"]), int(row["width"])):
            raise ValueError(f"image {row_name(row)!r}: decoded size {image.width}x{image.height} != the row's width x height "
                             f"{row['width']}x{row['height']}")
        return index, to_grey(image)


def _size(image: Any) -> tuple[int, int]:
    """(height, width) of a PIL image or an array."""
    return (image.height, image.width) if hasattr(image, "height") else tuple(np.shape(image)[:2])  # type: ignore


@dataclass
class InferenceCollator:
    """``(index, image)`` items -> processor inputs plus ``indices`` and ``target_sizes`` (each image's (h, w))."""

    processor: Any

    def __call__(self, items: Sequence[tuple[int, Any]]) -> dict[str, Any]:
        import torch

        inputs = self.processor(images=[image for _, image in items], return_tensors="pt")
        return {**inputs, "indices": torch.tensor([int(index) for index, _ in items]),
                "target_sizes": torch.tensor([_size(image) for _, image in items])}


def evaluation_loop(forward: Forward, processor: Any, batches: Iterable[Mapping[str, Any]],
                    detection_threshold: float | None = None, sky: bool = False,
                    gather: Callable[[list[tuple[int, dict[str, Any]]]], list[tuple[int, dict[str, Any]]]] | None = None,
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run :func:`detect` on every batch of :class:`InferenceCollator` output; yield ``(index, detections)`` per
    image. ``detection_threshold`` None: the processor's. ``gather``: collects each batch's items from every process
    (``accelerator.gather_for_metrics``), so each process sees all of them."""
    threshold = detection_threshold_of(processor, detection_threshold)
    for batch in batches:
        results = detect(forward, processor, batch, batch["target_sizes"].tolist(), threshold, sky)
        items = [(int(i), result) for i, result in zip(batch["indices"].tolist(), results)]
        yield from (gather(items) if gather is not None else items)


def inference_loader(rows: Any, processor: Any, batch_size: int, num_workers: int = 0) -> Any:
    """The ``DataLoader`` over a split's images that :func:`evaluation_loop` consumes (dataset order)."""
    from torch.utils.data import DataLoader

    return DataLoader(SplitImages(rows), batch_size=batch_size, collate_fn=InferenceCollator(processor),
                      num_workers=num_workers)
