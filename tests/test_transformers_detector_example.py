"""examples/transformers_detector/train_detector.py on the synthetic devkit: a random tiny DETR / RT-DETR trains on
full-resolution crops that keep every tiny box, its test detections are scored by `bafenet evaluate --predictions`."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples/transformers_detector/train_detector.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_detector", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_crops_keep_every_tiny_box_and_never_downscale(recipe):
    """2-3 px targets survive the crop (no area filter); the crop is at the original scale and flips stay exact."""
    rng = random.Random(0)
    grey = np.zeros((1080, 1918), np.uint8)
    boxes = np.asarray([[100, 200, 102, 202], [105, 204, 108, 207], [1500, 900, 1503, 902]], np.float32)
    kept = 0
    for _ in range(200):
        crop, out = recipe.random_crop(grey, boxes, 320, on_target=True, rng=rng)
        assert crop.shape == (320, 320) and len(out) >= 1
        widths = out[:, 2] - out[:, 0]
        assert ((widths >= 1) & (widths <= 3)).all()
        kept += len(out)
    assert kept >= 200
    assert recipe.window_origins(1918, 320, 32) == [0, 288, 576, 864, 1152, 1440, 1598]
    assert recipe.window_origins(256, 320, 32) == [0]


@pytest.mark.slow  # trains two tiny detectors and scores them
@pytest.mark.parametrize("kind", ["rt_detr", "detr"])
def test_recipe_trains_and_is_scored_by_bafenet_evaluate(recipe, kind, synthetic_dataset_dir, tmp_path, one_thread):
    out = tmp_path / kind
    code = recipe.main(["--dataset", str(synthetic_dataset_dir), "--tiny", kind, "--output-dir", str(out),
                        "--max-steps", "3", "--batch-size", "2", "--tile-size", "128"])
    assert code == 0
    predictions = json.loads((out / "predictions.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert len(predictions) == results["num_images"] > 0
    assert all(len(p["boxes"]) == len(p["scores"]) > 0 for p in predictions)
    assert results["meta"]["predictions"] == str(out / "predictions.json")
    assert 0.0 <= results["mAP07"] <= 1.0 and "by_size" in results
