"""Two thresholds, two names: `detection_threshold` (the post-processing cut) and `operating_threshold` (the score at
which precision/recall/F1, masks, points and drawings are computed), the same in flags, config and JSON keys."""

from __future__ import annotations

import argparse
import json

import pytest


def _parse(module: str, argv: list[str]) -> argparse.Namespace:
    import importlib

    parser = argparse.ArgumentParser(prog=f"bafenet {module}")
    importlib.import_module(f"bafenet.commands.{module}").add_arguments(parser)
    return parser.parse_args(argv)


def test_an_old_config_file_with_processor_settings_still_gives_its_processor(tmp_path):
    """Older config.json files carried the processor's settings (the cut under its old name `score_threshold`):
    they load, `from_model_config` uses them, and saving the config again drops them (the processor owns them)."""
    from bafenet.models.bafenet import BafeNetConfig, BafeNetImageProcessor

    config = BafeNetConfig(fpn_channels=32, gn_groups=8)
    old = {**config.to_dict(), "score_threshold": 0.125, "normalization": "imagenet", "max_detections": 50,
           "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "channel_order": "rgb"}
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = BafeNetConfig.from_pretrained(tmp_path)
    processor = BafeNetImageProcessor.from_model_config(loaded)
    assert (processor.detection_threshold, processor.max_detections, processor.normalization) == (0.125, 50, "imagenet")
    assert processor.channel_order == "rgb"
    saved = loaded.to_dict()
    assert not {"score_threshold", "detection_threshold", "normalization", "max_detections",
                "_processor_settings"} & set(saved)
    assert BafeNetImageProcessor().detection_threshold == 0.05
    assert BafeNetImageProcessor(score_threshold=0.2).detection_threshold == 0.2  # old preprocessor_config.json
    assert BafeNetImageProcessor(score_threshold=0.2, detection_threshold=0.4).detection_threshold == 0.4  # new wins
    assert BafeNetConfig(score_threshold=0.2, detection_threshold=0.4).processor_settings["detection_threshold"] == 0.4


@pytest.mark.parametrize(("module", "old", "new", "dest", "extra"), [
    ("evaluate", "--score-threshold", "--operating-threshold", "operating_threshold",
     ["--model", "m", "--dataset", "d"]),
    ("predict", "--threshold", "--operating-threshold", "operating_threshold", ["--model", "m", "--out", "o", "x.png"]),
    ("train", "--score-threshold", "--detection-threshold", "detection_threshold", []),
])
def test_old_threshold_flags_still_work_with_one_warning_line(module, old, new, dest, extra, capsys):
    assert getattr(_parse(module, [*extra, new, "0.25"]), dest) == 0.25
    assert capsys.readouterr().err == ""
    assert getattr(_parse(module, [*extra, old, "0.25"]), dest) == 0.25
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{old} is deprecated; use {new}" in err


@pytest.mark.parametrize("module", ["evaluate", "predict"])
def test_evaluate_and_predict_take_both_thresholds(module):
    extra = ["--model", "m", "--dataset", "d"] if module == "evaluate" else ["--model", "m", "--out", "o", "x.png"]
    args = _parse(module, [*extra, "--detection-threshold", "0.01", "--operating-threshold", "0.4"])
    assert (args.detection_threshold, args.operating_threshold) == (0.01, 0.4)
    defaults = _parse(module, extra)
    assert (defaults.detection_threshold, defaults.operating_threshold) == (None, None)  # processor's / model's


def test_the_pipeline_falls_back_to_the_package_operating_threshold():
    """The remote-code pipeline cannot import bafenet, so it keeps its own copy of the fallback operating point."""
    from transformers import pipeline

    from bafenet.evaluation import FALLBACK_OPERATING_THRESHOLD
    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor
    from bafenet.models.bafenet.pipeline_bafenet import FALLBACK_THRESHOLD, BafeNetObjectDetectionPipeline

    assert FALLBACK_THRESHOLD == FALLBACK_OPERATING_THRESHOLD == 0.5
    config = BafeNetConfig(backbone="resnet18", fpn_channels=32, num_head_convs=1, adapter_channels=16, image_size=128)
    detector = pipeline("object-detection", model=BafeNetForObjectDetection(config),
                        image_processor=BafeNetImageProcessor.from_model_config(config),
                        pipeline_class=BafeNetObjectDetectionPipeline)
    assert detector.default_threshold == FALLBACK_OPERATING_THRESHOLD
    config.operating_threshold = 0.25
    assert detector.default_threshold == 0.25
