"""A saved BAFE-Net loads with `trust_remote_code` in a fresh process where `bafenet` cannot be imported, bit-identical,
and runs in the `object-detection` pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL_KWARGS

from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys

    class BlockBafenet:  # make `import bafenet` impossible, although the package is installed
        def find_spec(self, name, path=None, target=None):
            if name == "bafenet" or name.startswith("bafenet."):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, BlockBafenet())
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForObjectDetection, pipeline

    folder, inputs_file, out_file = sys.argv[1:4]
    pixel_values = torch.load(inputs_file)
    results = {}
    for name, auto in (("auto_model", AutoModel), ("auto_detection", AutoModelForObjectDetection)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            out = model(pixel_values)
        results[name] = [out.logits, out.pred_boxes, out.centerness, *out.sky_logits]
        results[name + "_class"] = type(model).__module__
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    results["processor_class"] = type(processor).__module__
    detector = pipeline("object-detection", model=folder, trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120), dtype=np.uint8))
    results["pipeline"] = detector(image, threshold=0.0)
    results["pipeline_class"] = type(detector).__name__
    results["bafenet_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "bafenet")
    torch.save(results, out_file)
    """
)


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny tensors; bit-identical reductions


@pytest.mark.slow  # a fresh process
def test_fresh_process_without_bafenet_loads_bit_identical(tmp_path):
    torch.manual_seed(0)
    config = BafeNetConfig.improved(**TINY_MODEL_KWARGS)  # learned selector + tiny-box assignment
    model = BafeNetForObjectDetection(config).eval()
    with torch.no_grad():  # move BN running stats away from their init so the test would notice a re-init
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    BafeNetImageProcessor.from_model_config(config).save_pretrained(folder)

    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "configuration_bafenet.py", "image_processing_bafenet.py", "model.safetensors",
                     "modeling_bafenet.py", "pipeline_bafenet.py", "preprocessor_config.json", "tiling_bafenet.py"]
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForObjectDetection"}
    assert "AutoImageProcessor" in json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]
    for code in folder.glob("*.py"):  # no top-level import of the bafenet package (one optional, guarded import)
        assert not re.search(r"^(from|import) bafenet", code.read_text(), re.MULTILINE), code.name

    pixel_values = torch.randn(2, 3, 128, 128)
    torch.save(pixel_values, tmp_path / "inputs.pt")
    with torch.no_grad():
        out = model(pixel_values)
    expected = [out.logits, out.pred_boxes, out.centerness, *out.sky_logits]

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not supported" not in proc.stderr  # the model ships its pipeline class (config.custom_pipelines)
    results = torch.load(tmp_path / "out.pt", weights_only=False)
    assert results["bafenet_imported"] == []
    for key in ("auto_model_class", "auto_detection_class", "processor_class"):
        assert results[key].startswith("transformers_modules."), results[key]
    for name in ("auto_model", "auto_detection"):
        for got, want in zip(results[name], expected, strict=True):
            assert torch.equal(got, want), name
    assert results["pipeline_class"] == "BafeNetObjectDetectionPipeline"
    detections = results["pipeline"]
    assert detections and all(set(d) == {"score", "label", "box"} for d in detections)
    assert {d["label"] for d in detections} == {"target"}
    box = detections[0]["box"]
    assert set(box) == {"xmin", "ymin", "xmax", "ymax"} and 0 <= box["xmin"] <= box["xmax"] <= 120


def test_tiny_model_dir_fixture_roundtrip_in_process(tiny_model_dir):
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    model = BafeNetForObjectDetection.from_pretrained(tiny_model_dir).eval()
    assert model.config.mode == "faithful" and model.config.image_size == TINY_MODEL_KWARGS["image_size"]
    processor = AutoImageProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    auto = AutoModelForObjectDetection.from_pretrained(tiny_model_dir, trust_remote_code=True).eval()
    image = np.full((50, 70), 30, dtype=np.uint8)
    inputs = processor(image, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 128, 128)
    with torch.no_grad():
        a, b = model(**inputs), auto(**inputs)
    assert torch.equal(a.logits, b.logits)
    (result,) = processor.post_process_object_detection(a, threshold=0.0, target_sizes=[(50, 70)])
    assert result["boxes"].shape[1] == 4 and (result["boxes"][:, 2] <= 70).all()
