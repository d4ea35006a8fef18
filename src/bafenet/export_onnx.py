"""``bafenet export onnx``: export BAFE-Net's dense network to ONNX and check it against PyTorch in onnxruntime.

Usage::

    bafenet export onnx --model runs/quickstart/model --out model.onnx [--opset 17] [--dynamo]

What is exported is the *dense network* only: ``pixel_values`` (B, 3, H, W) float32, already pre-processed at the
model size ``config.image_size``, with a dynamic batch dimension; in zoom mode height and width are dynamic too) to the outputs of the PyTorch model, same names:

- ``logits`` (B, P, 1) class logits and ``centerness`` (B, P) logits over all P points of the three levels;
- ``pred_boxes`` (B, P, 4) absolute xyxy in input pixels (decoded point -/+ exp-distances);
- ``sky_logits`` (B, 1, H/8, W/8): the finest level's sky logit map (PyTorch returns a tuple of every level);
- ``strides`` (P,): the stride of each point's level (constant).

The file's ``metadata_props`` record what it was exported for (``bafenet.input_mode``, ``bafenet.input_size``,
``bafenet.strides``, ``bafenet.class_names``, ``bafenet.backbone``, JSON values, and ``bafenet.version``;
`bafenet.inference.onnx_metadata`); ``--onnx`` of ``predict`` and ``evaluate`` refuses a file exported for another
model than ``--model``.

The dynamic top-K channel exchange (topk / sort / gather / scatter) is inside the graph. Its channel choice is
the model's: ONNX TopK breaks ties towards the lower channel index, like the stable sort the model ranks raw
channel scores with in PyTorch (``modeling_bafenet.top_k_channels``), so all-tied scores (the untrained
faithful scorer) exchange the same channels in onnxruntime as in PyTorch.

Pre- and post-processing stay in Python, in the image processor saved with the model (it is not in the ONNX file)::

    processor = AutoImageProcessor.from_pretrained(model_dir)   # with bafenet installed; else trust_remote_code=True
    pixel_values = processor(images=images, return_tensors="np")["pixel_values"]   # resize + normalise
    arrays = session.run(list(OUTPUT_NAMES), {"pixel_values": pixel_values})
    outputs = outputs_from_onnx(arrays, pixel_values.shape)   # dict of tensors, as the processor reads them
    processor.post_process_object_detection(outputs, threshold=0.3, target_sizes=[(h, w), ...])  # NMS, rescale
    processor.post_process_sky_segmentation(outputs, target_sizes=[(h, w), ...])

``bafenet predict --onnx model.onnx --model DIR`` and ``bafenet evaluate --onnx`` do exactly this
(`bafenet.inference.InferenceModel`). After export the command runs the file in
onnxruntime on a random batch and prints the largest difference to PyTorch (after sigmoid for logits/centerness);
it fails when that exceeds ``--atol`` (default 1e-4).

Exporter: the TorchScript-based exporter (``dynamo=False``) is the default: it handles the exchange's data-dependent
indices, exports in about a second and gives a graph onnxruntime runs. ``--dynamo`` uses the ``torch.export`` based
exporter (needs ``onnxscript``; slower to export, same outputs in our tests).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .inference import OUTPUT_NAMES, dense_input_size, onnx_metadata, outputs_from_onnx, run_onnx

BATCHED_OUTPUTS = ("logits", "pred_boxes", "centerness", "sky_logits")  # "strides" (P,) has no batch dimension
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4

# OUTPUT_NAMES, outputs_from_onnx and run_onnx live in bafenet.inference (what runs the file); re-exported here
__all__ = ["DenseNetwork", "OUTPUT_NAMES", "export_onnx", "outputs_from_onnx", "run_onnx", "compare_with_pytorch",
           "write_metadata"]


class DenseNetwork(torch.nn.Module):
    """``pixel_values -> (logits, pred_boxes, centerness, sky_logits, strides)``: no pre/post-processing.

    ``sky_logits`` is the finest level's map only (the one ``post_process_sky_segmentation`` reads), ``strides`` the
    constant (P,) stride of every point (``post_process_object_detection`` splits the levels with it).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model.dense_outputs(pixel_values)  # one window in tiles mode: the stitching stays in Python
        return outputs["logits"], outputs["pred_boxes"], outputs["centerness"], outputs["sky_logits"][0], \
            outputs["strides"]


def _load_model(model: str | Path | torch.nn.Module, trust_remote_code: bool = False) -> torch.nn.Module:
    if isinstance(model, torch.nn.Module):
        return model
    from .models.loading import load_model

    return load_model(model, trust_remote_code=trust_remote_code)


def export_onnx(
    model: str | Path | torch.nn.Module,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    batch_size: int = 1,
) -> Path:
    """Export the dense network of ``model`` (a folder/repo id or a loaded model) to ``out``; returns the path.

    The batch dimension is dynamic; height and width are fixed to ``config.image_size`` (the image processor resizes
    every image to it), or to ``config.tile_window`` in tiles mode (:func:`run_onnx` runs the windows); in zoom mode
    they are dynamic too (the coarse pass runs on whole images, the windows at ``tile_window``).
    """
    model = _load_model(model).float().eval().cpu()
    height, width = dense_input_size(model.config)
    spatial = model.config.input_mode == "zoom"
    dense = DenseNetwork(model).eval()
    dummy = torch.randn(batch_size, 3, height, width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = dict(input_names=["pixel_values"], output_names=list(OUTPUT_NAMES), opset_version=opset)
    if dynamo:
        kwargs["opset_version"] = max(opset, 18)  # the dynamo exporter implements opset >= 18 only
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1024)},)
        if spatial:
            raise ValueError("--dynamo exports a fixed input size; the zoom mode needs whole images of any size: "
                             "export without --dynamo")
    else:
        kwargs["dynamic_axes"] = {"pixel_values": {0: "batch"}, **{name: {0: "batch"} for name in BATCHED_OUTPUTS}}
        if spatial:  # the zoom mode's coarse pass runs on whole images of any size
            kwargs["dynamic_axes"] = {"pixel_values": {0: "batch", 2: "height", 3: "width"},
                                      **{name: {0: "batch", 1: "points"} for name in ("logits", "pred_boxes",
                                                                                      "centerness")},
                                      "sky_logits": {0: "batch", 2: "sky_height", 3: "sky_width"},
                                      "strides": {0: "points"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shapes -> Python ints; checked below
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(dense, (dummy,), str(out), dynamo=dynamo, **kwargs)
    if dynamo and not out.is_file():
        raise RuntimeError(f"{out}: the dynamo exporter did not write the file")
    write_metadata(out, onnx_metadata(model.config))
    import onnx

    onnx.checker.check_model(str(out))
    return out


def write_metadata(path: str | Path, values: Mapping[str, str]) -> None:
    """Set ``values`` in the ``metadata_props`` of the ONNX file ``path`` (other entries are kept)."""
    import onnx

    proto = onnx.load(str(path))
    kept = {prop.key: prop.value for prop in proto.metadata_props if prop.key not in values}
    onnx.helper.set_model_props(proto, {**kept, **values})
    onnx.save(proto, str(path))


def compare_with_pytorch(
    model: str | Path | torch.nn.Module, onnx_path: str | Path, batch_size: int = 2, seed: int = 0
) -> dict[str, float]:
    """Largest absolute difference per output between onnxruntime and PyTorch on a random batch.

    ``logits``, ``centerness`` and ``sky_logits`` are compared after sigmoid (probabilities), ``pred_boxes`` divided
    by the input size (normalised coordinates), ``strides`` as they are.
    """
    import onnxruntime as ort

    model = _load_model(model).float().eval().cpu()
    height, width = dense_input_size(model.config)
    spatial = model.config.input_mode == "zoom"
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, height, width, generator=generator)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(list(OUTPUT_NAMES), {"pixel_values": pixel_values.numpy()})
    with torch.no_grad():
        torch_outputs = DenseNetwork(model)(pixel_values)
    diffs = {}
    for name, ours, reference in zip(OUTPUT_NAMES, onnx_outputs, torch_outputs):
        reference = reference.float()
        ours = torch.from_numpy(np.asarray(ours)).float()
        if ours.shape != reference.shape:
            raise AssertionError(f"{name}: ONNX shape {tuple(ours.shape)} != PyTorch shape {tuple(reference.shape)}")
        if name == "pred_boxes":
            ours, reference = ours / max(height, width), reference / max(height, width)
        elif name != "strides":
            ours, reference = ours.sigmoid(), reference.sigmoid()
        diffs[name] = float((ours - reference).abs().max())
    return diffs
