"""Two thresholds, two names: `detection_threshold` (the post-processing cut) and `operating_threshold` (the score at
which precision/recall/F1, masks, points and drawings are computed), the same in flags, config and JSON keys."""

from __future__ import annotations

import argparse
import json

import pytest


def _parse(module: str, argv: list[str]) -> argparse.Namespace:
    import importlib

    parser = argparse.ArgumentParser(prog=f"bafenet {module}")
    importlib.import_module(f"bafenet.{module}").add_arguments(parser)
    return parser.parse_args(argv)


def test_config_reads_the_old_score_threshold_key_as_the_detection_threshold(tmp_path):
    from bafenet.models.bafenet import BafeNetConfig, BafeNetImageProcessor

    config = BafeNetConfig(fpn_channels=32, gn_groups=8)
    old = {k: v for k, v in config.to_dict().items() if k != "detection_threshold"}
    (tmp_path / "config.json").write_text(json.dumps({**old, "score_threshold": 0.125}))
    loaded = BafeNetConfig.from_pretrained(tmp_path)
    assert loaded.detection_threshold == 0.125 and "score_threshold" not in loaded.to_dict()
    processor = BafeNetImageProcessor.from_model_config(loaded)
    assert processor.detection_threshold == 0.125  # the processor owns it at inference
    assert BafeNetImageProcessor().detection_threshold == 0.05


@pytest.mark.parametrize(("module", "old", "new", "dest", "extra"), [
    ("evaluation", "--score-threshold", "--operating-threshold", "operating_threshold",
     ["--model", "m", "--dataset", "d"]),
    ("predict", "--threshold", "--operating-threshold", "operating_threshold", ["--model", "m", "--out", "o", "x.png"]),
    ("training", "--score-threshold", "--detection-threshold", "detection_threshold", []),
])
def test_old_threshold_flags_still_work_with_one_warning_line(module, old, new, dest, extra, capsys):
    assert getattr(_parse(module, [*extra, new, "0.25"]), dest) == 0.25
    assert capsys.readouterr().err == ""
    assert getattr(_parse(module, [*extra, old, "0.25"]), dest) == 0.25
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{old} is deprecated; use {new}" in err


@pytest.mark.parametrize("module", ["evaluation", "predict"])
def test_evaluate_and_predict_take_both_thresholds(module):
    extra = ["--model", "m", "--dataset", "d"] if module == "evaluation" else ["--model", "m", "--out", "o", "x.png"]
    args = _parse(module, [*extra, "--detection-threshold", "0.01", "--operating-threshold", "0.4"])
    assert (args.detection_threshold, args.operating_threshold) == (0.01, 0.4)
    defaults = _parse(module, extra)
    assert (defaults.detection_threshold, defaults.operating_threshold) == (None, None)  # processor's / model's
