"""What a finished run writes: validation numbers `bafenet evaluate` reproduces on colour images, `test` scored once
when the selected model is the last, and honest labels of how the backbone was initialised and trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains a tiny model


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def colour_dataset_dir(synthetic_dataset_dir, tmp_path_factory) -> Path:
    """The synthetic splits with every image turned into a tinted RGB image (R, G, B differ), as the 12 colour
    images of DenseSIRST."""
    import datasets
    from PIL import Image

    def tint(row: dict) -> dict:
        grey = np.asarray(row["image"].convert("L"), dtype=np.float32)
        rgb = np.stack([grey * 0.9, grey, np.minimum(grey * 1.1 + 7, 255)], axis=-1).astype(np.uint8)
        return {"image": Image.fromarray(rgb, mode="RGB")}

    out = tmp_path_factory.mktemp("colour") / "dataset"
    (out / "data").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        rows = datasets.load_dataset(str(synthetic_dataset_dir), split=split)
        rows.map(tint).to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return out


@pytest.fixture(scope="module")
def finished_run(colour_dataset_dir, tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    """One update of the tiny (random-weight) model on the colour splits; the selected model is the last one."""
    import contextlib
    import io

    from bafenet.commands.train import main

    out = tmp_path_factory.mktemp("run") / "model"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--dataset", str(colour_dataset_dir), "--model-name-or-path", str(tiny_model_dir),
                     "--output-dir", str(out), "--dataloader-num-workers", "0", "--train-repeats", "1",
                     "--per-device-eval-batch-size", "2", "--max-steps", "1", "--num-train-epochs", "1",
                     "--optimizer", "adamw", "--report-to", "none", "--copy-paste-probability", "0",
                     "--detection-threshold", "0.001"])
    assert code == 0
    return out, printed.getvalue()


def test_colour_split_validation_numbers_equal_bafenet_evaluate_on_the_saved_model(finished_run, colour_dataset_dir):
    import datasets

    from bafenet.cli import main

    out, _ = finished_run
    assert datasets.load_dataset(str(colour_dataset_dir), split="validation")[0]["image"].mode == "RGB"
    recorded = json.loads((out / "metrics.json").read_text())["selected"]["validation"]
    results = out.parent / "validation.json"
    assert main(["evaluate", "--model", str(out), "--dataset", str(colour_dataset_dir), "--split", "validation",
                 "--device", "cpu", "--detection-threshold", "0.001", "--out", str(results)]) == 0
    evaluated = json.loads(results.read_text())
    assert recorded["num_detections"] == evaluated["num_detections"] > 0
    for key in ("mAP07", "mAP12", "recall", "best_f1"):
        assert evaluated[key] == pytest.approx(recorded[key], abs=1e-9), key


def test_test_split_is_scored_once_when_the_selected_model_is_the_last(finished_run):
    out, printed = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected"]["step"] == metrics["last"]["step"] == metrics["global_step"] == 1
    assert metrics["selected"]["test"] == metrics["last"]["test"] and metrics["last"]["test"]["num_images"] > 0
    assert "test is scored once" in printed
    assert "test on the selected model" not in printed and printed.count("test on the last model") == 1


def test_metrics_json_config_and_card_say_how_the_backbone_was_trained(finished_run, tmp_path):
    from bafenet.model_card import build_model_card
    from bafenet.models.bafenet import BafeNetConfig

    out, printed = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    # the tiny model: faithful network, random backbone weights, frozen BatchNorm -> not the paper's run
    assert config["mode"] == "faithful" and config["backbone_init"] == "random" and config["freeze_backbone_bn"]
    assert metrics["backbone_init"] == "random" and metrics["backbone_bn_frozen"] is True
    assert metrics["paper_faithful"] is False
    assert metrics["deviations"] == ["backbone initialised from random weights (paper: ImageNet weights)"]
    assert "paper-faithful run: no" in printed
    card = build_model_card(out, "tester/model")
    assert "initialised from random weights; its BatchNorm was frozen" in card and "**not paper-faithful**" in card

    trained_bn = BafeNetConfig.improved(fpn_channels=32, gn_groups=8, freeze_backbone_bn=False)
    assert trained_bn.backbone_init == "random" and not trained_bn.paper_faithful
    assert "backbone BatchNorm trained (paper: frozen)" in trained_bn.paper_deviations
    assert any(d.startswith("mode=improved") for d in trained_bn.paper_deviations)
    paper = BafeNetConfig(backbone_init="imagenet")  # as a config whose ResNet got ImageNet weights records it
    assert paper.paper_faithful and paper.paper_deviations == []
    older = {k: v for k, v in config.items() if k != "backbone_init"}  # a config.json from before the field
    assert BafeNetConfig.from_dict({**older, "backbone_weights_provenance": {"name": "r18.pth"}}).backbone_init \
        == "imagenet"
    (tmp_path / "config.json").write_text(json.dumps({**config, "backbone_init": "imagenet"}))
    assert "**paper-faithful**" in build_model_card(tmp_path, "tester/paper")
