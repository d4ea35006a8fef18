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
    assert result == pytest.approx(expected, nan_ok=True)  # every key, the same numbers as the library
    assert result["mAP12"] == pytest.approx(0.5)


def test_module_is_self_contained_and_equals_the_library_on_random_splits():
    """No `bafenet` import (it runs from the Hub); VOC numbers equal `bafenet.metrics.box` on random data; the
    citation is `bafenet.CITATION`, the one the dataset and model cards print."""
    import ast
    import importlib.util

    import numpy as np

    import bafenet
    from bafenet.metrics.box import voc_detection_metrics

    source = (MODULE_DIR / "densesirst_voc.py").read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"collections", "dataclasses", "typing", "datasets", "evaluate", "numpy"}, imported
    spec = importlib.util.spec_from_file_location("densesirst_voc_copy", MODULE_DIR / "densesirst_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._CITATION.strip() == bafenet.CITATION.strip()

    rng = np.random.default_rng(0)
    for trial in range(20):
        references, predictions = [], []
        for i in range(int(rng.integers(1, 6))):
            xy = rng.uniform(0, 50, (int(rng.integers(0, 6)), 2))
            gt = np.concatenate([xy, xy + rng.uniform(1, 6, xy.shape)], 1)
            jitter = rng.normal(0, 1.0, gt.shape)
            det = np.concatenate([gt + jitter, np.concatenate([xy := rng.uniform(0, 50, (2, 2)), xy + 3], 1)])
            det[:, 2:] = np.maximum(det[:, 2:], det[:, :2])
            scores = np.round(rng.uniform(0, 1, len(det)), 2)  # ties included
            references.append({"image_id": f"im{i}", "boxes": gt.tolist()})
            predictions.append({"image_id": f"im{i}", "boxes": det.tolist(), "scores": scores.tolist()})
        for kwargs in ({}, {"legacy_plus_one": False, "iou_threshold": 0.3, "operating_threshold": 0.25}):
            got = module.voc_detection_metrics(predictions, references, **kwargs)
            assert got == pytest.approx(voc_detection_metrics(predictions, references, **kwargs), nan_ok=True), trial


def test_evaluate_module_rejects_mismatched_ids(no_network, tmp_path):
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(MODULE_DIR), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="image ids do not match"):
        metric.compute(
            predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
            references=[{"image_id": "b", "boxes": [[0, 0, 4, 4]]}],
        )
