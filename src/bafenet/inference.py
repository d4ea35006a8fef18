"""The one inference loop, after the ``evaluation_loop`` of transformers' no-trainer examples: images in batches
through the image processor, the network (PyTorch or ONNX), the post-processing, back in each image's own pixels.

``bafenet evaluate`` (a dataset split), in-training validation (the same split loader, sharded by Accelerate and
gathered) and ``bafenet predict`` (image files) all run :func:`evaluation_loop`; they differ only in where the
images come from (:class:`SplitImages` for a split, a list for files) and what they do with the detections.

:class:`InferenceModel` is the bundle both commands load: the image processor, the config and the network, either
the PyTorch model or the dense network exported by ``bafenet export onnx`` in an onnxruntime session
(:func:`run_onnx`: one session run in resize mode, the model's own window loop around session runs in tiles and zoom
modes). The ONNX file records in its metadata what it was exported for (:func:`onnx_metadata`); loading it checks
that against the model folder's config (:func:`open_onnx_session`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data.transforms import row_name, to_grey
from .outputs import UserError

__all__ = ["InferenceCollator", "InferenceModel", "OUTPUT_NAMES", "SplitImages", "check_onnx_metadata",
           "dense_input_size", "detect", "detection_threshold_of", "evaluation_loop", "inference_loader",
           "model_forward", "model_inputs", "onnx_metadata", "open_onnx_session", "outputs_from_onnx", "run_onnx"]

Forward = Callable[[Mapping[str, Any]], Any]

# the dense network's outputs in the ONNX file, in this order (`bafenet.export_onnx.DenseNetwork`)
OUTPUT_NAMES = ("logits", "pred_boxes", "centerness", "sky_logits", "strides")
METADATA_PREFIX = "bafenet."  # the keys of the ONNX file's metadata_props that bafenet writes
# what the ONNX file was exported for, checked against the model folder's config when it is loaded
CHECKED_METADATA = ("input_mode", "input_size", "strides", "class_names", "backbone")


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


# ------------------------------------------------------------------------------------------------ the network


def dense_input_size(config: Any) -> tuple[int, int]:
    """(height, width) of the dense network's input: the model size, or the sliding window in tiles and zoom modes
    (zoom exports also take whole images of any size for the coarse pass)."""
    size = config.tile_window if config.input_mode in ("tiles", "zoom") else config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]


def onnx_metadata(config: Any) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` for a model of ``config`` (``bafenet.*`` keys; lists as JSON): what
    ``bafenet export onnx`` exported it for (:data:`CHECKED_METADATA`) and the bafenet version that did."""
    from . import __version__

    labels = config.id2label
    values = {"input_mode": config.input_mode, "input_size": list(dense_input_size(config)),
              "strides": [int(s) for s in config.strides],
              "class_names": [str(labels[key]) for key in sorted(labels, key=int)],
              "backbone": str(config.backbone), "version": __version__}
    return {METADATA_PREFIX + key: value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()}


def _reexport_hint(path: Path, model: Any) -> str:
    return f"re-export it with `bafenet export onnx --model {model} --out {path}`"


def check_onnx_metadata(path: str | Path, recorded: Mapping[str, str], config: Any, model: Any = "MODEL",
                        option: str = "--onnx") -> None:
    """Refuse (`UserError`, one line naming the file and the fix) an ONNX file whose ``recorded`` metadata does not
    say it was exported for a model of ``config`` (``model``: the folder, named in the fix)."""
    path = Path(path)
    expected = onnx_metadata(config)
    if not any(key.startswith(METADATA_PREFIX) for key in recorded):
        raise UserError(f"{option} {path}: carries no bafenet export metadata (exported by an older bafenet, or not "
                        f"by `bafenet export onnx`); {_reexport_hint(path, model)}")
    differences = []
    for name in CHECKED_METADATA:
        key = METADATA_PREFIX + name
        if recorded.get(key) != expected[key]:
            differences.append(f"{name} {recorded.get(key, 'missing')} (the model: {expected[key]})")
    if differences:
        raise UserError(f"{option} {path}: exported for another model than --model {model}: "
                        f"{'; '.join(differences)}; {_reexport_hint(path, model)}")


def open_onnx_session(path: str | Path, config: Any, model: Any = "MODEL", option: str = "--onnx") -> Any:
    """An onnxruntime CPU session of the ONNX file ``path`` after checking it was exported for a model of
    ``config`` (:func:`check_onnx_metadata`). A missing file, a folder, a file onnxruntime cannot load, or a
    missing onnxruntime: one-line `UserError`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option} {path}: no such file; make it with `bafenet export onnx --model {model} "
                        f"--out {path}`")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; pass the .onnx file written by `bafenet export onnx`")
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{option} {path}: needs onnxruntime; install it with `pip install 'bafenet[onnx]'`") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a file it cannot parse
        reason = " ".join(str(error).split())[:200]
        raise UserError(f"{option} {path}: not an ONNX file onnxruntime can load ({reason}); pass the file written "
                        "by `bafenet export onnx`") from None
    check_onnx_metadata(path, session.get_modelmeta().custom_metadata_map, config, model, option)
    return session


def outputs_from_onnx(arrays: list[np.ndarray], pixel_values_shape: tuple[int, ...]) -> dict[str, Any]:
    """Wrap an onnxruntime result (in ``OUTPUT_NAMES`` order) so the image processor's ``post_process_*`` accept it."""
    import torch

    outputs: dict[str, Any] = {name: torch.from_numpy(np.asarray(array)) for name, array in zip(OUTPUT_NAMES, arrays)}
    outputs["sky_logits"] = (outputs["sky_logits"],)
    outputs["input_size"] = torch.tensor(pixel_values_shape[-2:])
    return outputs


def run_onnx(session: Any, inputs: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """The dense outputs of an onnxruntime ``session`` for processor ``inputs``, as the PyTorch model returns them:
    one pass in resize mode; with ``image_sizes`` (tiles and zoom modes) the model's own image path
    (``tiling_bafenet.run_image_path``: windows, coarse pass, stitching) around session runs."""
    import torch

    pixel_values = torch.as_tensor(inputs["pixel_values"]).float()

    def dense(batch: torch.Tensor) -> dict[str, Any]:
        arrays = session.run(list(OUTPUT_NAMES), {"pixel_values": batch.cpu().numpy()})
        return outputs_from_onnx(arrays, tuple(batch.shape))

    if inputs.get("image_sizes") is None or config.input_mode == "resize":
        return dense(pixel_values)
    from .models.bafenet.tiling_bafenet import run_image_path

    sizes = [(int(h), int(w)) for h, w in torch.as_tensor(inputs["image_sizes"]).tolist()]
    return run_image_path(dense, pixel_values, sizes, config)


@dataclass(frozen=True)
class InferenceModel:
    """What inference needs of a model, loaded once: its image ``processor``, its ``config`` and the network, either
    the PyTorch ``model`` on ``device`` or an onnxruntime ``session`` of its exported dense network (CPU).

    :meth:`load` reads a model folder (``onnx``: the dense network from that file instead of the weights);
    :meth:`from_loaded` wraps a model already in memory. ``forward`` is the network step of :func:`evaluation_loop`,
    :meth:`detect_batches` the loop itself. `bafenet.predict.Predictor` and ``bafenet evaluate`` both run it.
    """

    processor: Any
    config: Any
    model: Any = None
    session: Any = None
    device: Any = None

    @classmethod
    def load(cls, model: str | Path, onnx: str | Path | None = None, *, device: str | None = None,
             trust_remote_code: bool = False, revision: str | None = None) -> "InferenceModel":
        """Load ``model`` (a folder or Hub repo id saved with ``save_pretrained``). The PyTorch model is loaded in
        float32 (whatever the checkpoint's dtype) on ``device`` (default: CUDA when available, else CPU); with
        ``onnx`` only the processor and config are read and the dense network runs from that file in onnxruntime
        on the CPU (a ``device`` other than the CPU is refused)."""
        import torch

        from .models.loading import load_config, load_model, load_processor

        if onnx is not None and device is not None and str(device).split(":")[0] != "cpu":
            raise UserError(f"--device {device}: --onnx {onnx} runs in onnxruntime on the CPU; leave out --device "
                            f"(or pass --device cpu), or leave out --onnx to run the PyTorch model on {device}")
        trust = dict(trust_remote_code=trust_remote_code, revision=revision)
        config = load_config(model, **trust)
        if onnx is not None:
            session = open_onnx_session(onnx, config, model)  # checked before anything else is loaded
            return cls(load_processor(model, **trust), config, session=session, device=torch.device("cpu"))
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        network = load_model(model, config=config, dtype=torch.float32, **trust)  # fp16/bf16 weights: float32 too
        return cls(load_processor(model, **trust), config, model=network.to(device).eval(), device=device)

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, device: Any = None) -> "InferenceModel":
        """Wrap a PyTorch ``model`` in memory and its ``processor``; inputs go to ``device`` (default: where the
        model is). The model's train/eval mode is left as it is."""
        if device is None:
            device = next(model.parameters()).device
        return cls(processor, model.config, model=model, device=device)

    def with_processor(self, processor: Any) -> "InferenceModel":
        """The same network with another image processor (e.g. other post-processing settings)."""
        return self if processor is None or processor is self.processor else replace(self, processor=processor)

    def forward(self, inputs: Mapping[str, Any]) -> Any:
        """Run the network on processor ``inputs``; returns the model output (or the equivalent from onnxruntime)."""
        if self.session is not None:
            return run_onnx(self.session, inputs, self.config)
        return model_forward(self.model, self.device)(inputs)

    def detect_batches(self, batches: Iterable[Mapping[str, Any]], detection_threshold: float | None = None,
                       sky: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
        """:func:`evaluation_loop` with this network and processor over :class:`InferenceCollator` ``batches``."""
        return evaluation_loop(self.forward, self.processor, batches, detection_threshold, sky)
