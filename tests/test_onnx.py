"""ONNX export: onnxruntime matches PyTorch (atol 1e-4 on probabilities and input-normalised boxes), the top-K
channel exchange breaks ties as PyTorch does (lower channel index first), the file records what it was exported for,
and `bafenet predict --onnx` and `bafenet evaluate --onnx` give the PyTorch detections (tiles and zoom modes:
tests/test_tiles.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL_KWARGS

pytestmark = pytest.mark.slow  # exports ONNX (several seconds)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ATOL = 1e-4  # probabilities (sigmoid of logits / centerness / sky) and boxes divided by the input size


@pytest.fixture(scope="module")
def varied_model_dir(tmp_path_factory) -> Path:
    """A tiny model whose head convs are Kaiming-initialised: varied detection scores and distinct channel scores, like
    a trained model (the stock init gives near-equal scores everywhere, which makes detection order arbitrary)."""
    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

    torch.manual_seed(0)
    model = BafeNetForObjectDetection(BafeNetConfig(**TINY_MODEL_KWARGS)).eval()
    with torch.no_grad():
        for module in model.head.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)
        # raw channel scores ~1: the K-th/K+1-th gap (>= 1e-5 here) stays far above the two runtimes' rounding noise,
        # so both rank the channels alike (exact ties are broken alike anyway: lower channel index first)
        model.head.exchange.scorer.conv.weight.mul_(1e-2)
    out = tmp_path_factory.mktemp("varied_model")
    model.save_pretrained(out)
    size = TINY_MODEL_KWARGS["image_size"]
    BafeNetImageProcessor(size={"height": size, "width": size}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def onnx_file(varied_model_dir, tmp_path_factory) -> Path:
    from bafenet.cli import main

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    # the command itself fails (exit 1) when onnxruntime and PyTorch differ by more than --atol
    assert main(["export", "onnx", "--model", str(varied_model_dir), "--out", str(out), "--atol", str(ATOL)]) == 0
    return out


def test_onnxruntime_matches_pytorch_with_a_dynamic_batch(varied_model_dir, onnx_file):
    from bafenet.export_onnx import compare_with_pytorch

    diffs = compare_with_pytorch(varied_model_dir, onnx_file, batch_size=3, seed=1)
    assert set(diffs) == {"logits", "pred_boxes", "centerness", "sky_logits", "strides"}
    assert max(diffs.values()) <= ATOL, diffs


def test_graph_contains_the_topk_exchange(onnx_file):
    import onnx

    ops = {node.op_type for node in onnx.load(str(onnx_file)).graph.node}
    assert {"TopK", "ScatterElements"} <= ops, sorted(ops)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated in torch 2.9+
def test_exchange_ties_select_the_same_channels_in_onnxruntime(tmp_path):
    """All-tied channel scores: PyTorch and onnxruntime both exchange channels 0..K-1 (ties go to the lower index)."""
    from bafenet.models.bafenet.modeling_bafenet import ChannelAttExchange

    torch.manual_seed(0)
    exchange = ChannelAttExchange(channels=32, num_exchange=16, adapter_channels=8).eval()
    with torch.no_grad():  # raw channel scores exactly 0 for every channel, in both runtimes
        exchange.scorer.conv.weight.zero_()
        exchange.scorer.conv.bias.zero_()
    seg, cls = torch.randn(2, 32, 6, 6), torch.randn(2, 32, 6, 6)
    assert torch.equal(exchange.select(seg)[1], torch.arange(16).expand(2, -1))
    path = tmp_path / "exchange.onnx"
    with torch.no_grad():
        torch.onnx.export(exchange, (seg, cls), str(path), input_names=["seg_features", "cls_features"],
                          opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"seg_features": seg.numpy(), "cls_features": cls.numpy()})
    with torch.no_grad():
        expected = exchange(seg, cls)
    for ours, reference, x in zip(got, expected, (seg, cls)):
        np.testing.assert_allclose(ours, reference.numpy(), atol=1e-5)
        changed = np.abs(ours - x.numpy()).reshape(2, 32, -1).max(-1) > 0
        assert changed[:, :16].all() and not changed[:, 16:].any()  # onnxruntime exchanged channels 0..15 too


def test_predict_with_onnx_gives_the_pytorch_detections(varied_model_dir, onnx_file, tmp_path):
    from bafenet.cli import main

    rng = np.random.default_rng(3)
    for k, (h, w) in enumerate([(100, 140), (128, 128)]):
        Image.fromarray(rng.integers(0, 255, (h, w), np.uint8), mode="L").save(tmp_path / f"img{k}.png")
    reports = {}
    for name, extra in (("torch", []), ("onnx", ["--onnx", str(onnx_file)])):
        out = tmp_path / name
        args = ["predict", "--model", str(varied_model_dir), str(tmp_path / "img0.png"), str(tmp_path / "img1.png"),
                "--out", str(out), "--operating-threshold", "0.05", "--sky", "--no-draw", *extra]
        assert main(args) == 0
        reports[name] = json.loads((out / "predictions.json").read_text())["images"]
    assert reports["onnx"][0]["sky_fraction"] == pytest.approx(reports["torch"][0]["sky_fraction"], abs=1e-3)
    for torch_record, onnx_record in zip(reports["torch"], reports["onnx"]):
        assert len(torch_record["scores"]) == len(onnx_record["scores"]) > 0
        np.testing.assert_allclose(onnx_record["scores"], torch_record["scores"], atol=ATOL)
        np.testing.assert_allclose(onnx_record["boxes"], torch_record["boxes"], atol=0.011)  # JSON keeps 2 decimals


def test_the_file_records_what_it_was_exported_for(varied_model_dir, onnx_file):
    import onnx

    from bafenet import __version__

    recorded = {prop.key: prop.value for prop in onnx.load(str(onnx_file)).metadata_props}
    size = TINY_MODEL_KWARGS["image_size"]
    assert recorded == {"bafenet.input_mode": "resize", "bafenet.input_size": f"[{size}, {size}]",
                        "bafenet.strides": "[8, 16, 32]", "bafenet.class_names": '["target"]',
                        "bafenet.backbone": "resnet18", "bafenet.version": __version__}


def test_evaluate_with_onnx_gives_the_pytorch_detections(varied_model_dir, onnx_file, synthetic_dataset_dir,
                                                         tmp_path):
    from bafenet.cli import main

    results = {}
    for name, extra in (("torch", ["--device", "cpu"]), ("onnx", ["--onnx", str(onnx_file)])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--model", str(varied_model_dir), "--dataset", str(synthetic_dataset_dir),
                     "--split", "test", "--out", str(out), "--batch-size", "3", "--operating-threshold", "0.05",
                     *extra]) == 0
        results[name] = json.loads(out.read_text())
    assert results["onnx"]["meta"]["device"] == "cpu (onnxruntime)"
    assert results["onnx"]["sky_IoU"] == pytest.approx(results["torch"]["sky_IoU"], abs=1e-3)
    pairs = list(zip(results["torch"]["detections"], results["onnx"]["detections"]))
    assert len(pairs) == len(results["torch"]["detections"]) > 0
    for torch_record, onnx_record in pairs:
        assert onnx_record["image_id"] == torch_record["image_id"]
        assert len(torch_record["scores"]) == len(onnx_record["scores"]) > 0
        np.testing.assert_allclose(onnx_record["scores"], torch_record["scores"], atol=ATOL)
        np.testing.assert_allclose(onnx_record["boxes"], torch_record["boxes"], atol=1e-3)
