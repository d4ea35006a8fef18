"""The `evaluate` module in metrics/densesirst_voc loads from the checkout with the network cut off."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "metrics" / "densesirst_voc"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_evaluate_load_offline_and_compute_matches_the_library(no_network, tmp_path):
    evaluate = pytest.importorskip("evaluate")
    from bafenet.metrics.box import voc_detection_metrics

    metric = evaluate.load(str(MODULE_DIR), cache_dir=str(tmp_path))
    predictions = [
        {"image_id": "a", "boxes": [[0, 0, 4, 4], [10, 10, 14, 14]], "scores": [0.9, 0.3]},
        {"image_id": "b", "boxes": [], "scores": []},
    ]
    references = [{"image_id": "b", "boxes": [[3, 3, 5, 5]]}, {"image_id": "a", "boxes": [[0, 0, 4, 4]]}]
    metric.add_batch(predictions=predictions[:1], references=references[:1])
    metric.add_batch(predictions=predictions[1:], references=references[1:])  # id order differs across batches
    result = metric.compute(legacy_plus_one=False)
    expected = voc_detection_metrics(predictions, references, legacy_plus_one=False)
    for key in ("mAP07", "mAP12", "recall", "precision_at_score", "num_targets", "num_detections"):
        assert result[key] == pytest.approx(expected[key]), key
    assert result["mAP12"] == pytest.approx(0.5) and result["coco_AP50"] == pytest.approx(0.5, abs=0.01)


def test_evaluate_module_rejects_mismatched_ids(no_network, tmp_path):
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(MODULE_DIR), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="image ids do not match"):
        metric.compute(
            predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
            references=[{"image_id": "b", "boxes": [[0, 0, 4, 4]]}],
            coco=False,
        )
