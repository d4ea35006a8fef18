"""`bafenet quickstart --fast`: every artefact of the whole pipeline lands where the summary says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


@pytest.mark.slow
def test_quickstart_fast_writes_every_artefact(tmp_path, capsys):
    from bafenet.cli import main

    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "quickstart.json").read_text())
    assert summary["status"] == "done"
    art = summary["artefacts"]
    assert (out / "SIRSTdevkit" / "Splits" / "test_v2.txt").is_file()
    assert any((out / "densesirst").glob("**/*.parquet")) and (out / "densesirst" / "README.md").is_file()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"):
        assert (out / "model" / name).is_file(), name
    results = json.loads((out / "evaluation" / "test_results.json").read_text())
    assert results["num_images"] == summary["num_test_images"] > 0
    assert {"mAP07", "mAP12", "recall"} <= set(summary["test_metrics"])
    predictions = json.loads((out / "predictions" / "predictions.json").read_text())
    assert len(predictions["images"]) == 2 and predictions["errors"] == []
    for record in predictions["images"]:
        assert Image.open(out / "predictions" / record["overlay"]).height == record["height"]
        assert (out / "predictions" / record["sky_mask"]).is_file()
    # metrics.json of the training and test_results.json of `bafenet evaluate` hold what the summary reports
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    assert {"selected", "last", "validation_history", "operating_threshold", "backbone_init", "backbone_bn_frozen",
            "paper_faithful", "deviations"} <= set(metrics)
    assert metrics["global_step"] == 2 and metrics["selected"]["validation"]["num_images"] == 2
    assert summary["training"]["global_step"] == 2 and metrics["paper_faithful"] is False  # random backbone
    assert {"mAP07", "recall", "operating_threshold", "IoU", "Pd", "point_f1", "meta", "conventions",
            "detections"} <= set(results)
    assert results["meta"]["model"] == art["model"] and len(results["detections"]) == results["num_images"]
    assert summary["test_metrics"]["mAP07"] == results["mAP07"]
    assert (out / "evaluation" / "test_results_pr_curve.png").is_file()
    assert len(list((out / "predictions" / "overlays").glob("*.png"))) == 2
    model_row = next(line for line in printed.splitlines() if line.strip().startswith("trained model"))
    assert str(Path(art["model"]).name) in model_row
    assert "Quickstart finished" in printed and "mAP07" in printed
    assert all(summary["commands"][k] for k in ("devkit", "dataset", "train", "evaluate", "predict"))


def test_quickstart_refuses_a_foreign_non_empty_folder(tmp_path, capsys):
    from bafenet.cli import main

    (tmp_path / "mine.txt").write_text("precious")
    assert main(["quickstart", "--fast", "--out", str(tmp_path)]) == 1
    assert "was not written by bafenet" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "precious"
