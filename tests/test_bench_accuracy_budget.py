"""benchmarks/bench_accuracy_budget.py --smoke end to end (ours and the FCOS peer trained concurrently for a few
seconds on the synthetic devkit, both scored by `bafenet evaluate`), and the peer's exp box regression."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


@pytest.mark.slow
def test_smoke_mode_trains_both_for_the_same_time_and_scores_both_with_bafenet_evaluate(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(BENCHMARKS / "bench_accuracy_budget.py"), "--smoke", "--cache-dir",
               str(tmp_path / "cache"), "--output-dir", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("equal wall time"):]
    for label in ("test mAP07", "test mAP12", "test recall", "updates", "seconds per update", "ours/peer"):
        assert label in table, label

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"].startswith("concurrent")  # both trained at once, one thread each
    # each stopped by the same time budget, not by an epoch or update ceiling (no upper bound on the seconds: a loaded
    # machine may overrun the budget by any amount, which says nothing about the benchmark)
    assert json.loads((out / "ours" / "metrics.json").read_text())["stopped_early"] == "max_train_minutes"
    for name in ("ours", "peer"):
        training = summary[name]["training"]
        assert training["updates"] > 0 and training["train_seconds"] >= 60 * summary["minutes"], (name, training)
        assert set(summary[name]["test"]) >= {"mAP07", "mAP12", "recall"} and summary[name]["size_groups"]
    # ours: the normal trainer, pinned to 0 loader workers; selected on validation, scored as a model folder
    train_args = json.loads((out / "ours" / "train_args.json").read_text())
    assert train_args["dataloader_num_workers"] == 0 and train_args["max_train_minutes"] == summary["minutes"]
    ours, peer = (json.loads((out / f"{n}_test.json").read_text()) for n in ("ours", "peer"))
    assert ours["meta"]["model"] == str(out / "ours") and "sky_IoU" in ours
    # the peer: its test detections scored through `bafenet evaluate --predictions`
    assert peer["meta"]["predictions"] == str(out / "peer" / "test_detections.json")
    assert peer["num_images"] == ours["num_images"] and peer["num_detections"] > 0
    assert json.loads((out / "peer" / "metrics.json").read_text())["validation_history"]


def test_peer_regresses_boxes_through_exp_with_a_scale_per_level():
    import torch
    from torchvision.models.detection.fcos import FCOSRegressionHead

    sys.path.insert(0, str(BENCHMARKS))
    from fcos_peer import ExpRegressionHead

    torch.manual_seed(0)
    head = ExpRegressionHead(FCOSRegressionHead(32, 1, num_convs=1), num_levels=2)
    features = [torch.randn(1, 32, 4, 4), torch.randn(1, 32, 2, 2)]
    with torch.no_grad():
        head.bbox_reg.bias.fill_(-50.0)  # relu would give 0 (a zero-area box); exp stays positive
        boxes, centerness = head(features)
        assert boxes.shape == (1, 20, 4) and centerness.shape == (1, 20, 1) and (boxes > 0).all()
        head.scales[1] = 0.0  # the level's scale multiplies the regression before exp
        assert torch.allclose(head(features)[0][:, 16:], torch.ones(1, 4, 4))
