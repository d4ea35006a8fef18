"""The `evaluate` module generated from the library (`bafenet metric export`) loads offline and equals the library."""

from __future__ import annotations

import ast
import importlib.util
import json
import socket
from pathlib import Path

import pytest

from bafenet.metric_export import write_evaluate_module
from bafenet.metrics.evaluate_module import evaluate_module_files, undefined_names
from bafenet.outputs import MARKER

# imported before `no_network` sets HF_HUB_OFFLINE: huggingface_hub reads it once, at import, and later tests push
evaluate = pytest.importorskip("evaluate")
ALLOWED_IMPORTS = {"collections", "dataclasses", "typing", "datasets", "evaluate", "numpy"}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory) -> Path:
    return write_evaluate_module(tmp_path_factory.mktemp("export") / "densesirst_voc")


def test_evaluate_load_offline_and_compute_matches_the_library(module_dir, no_network, tmp_path):
    from bafenet.metrics.box import voc_detection_metrics

    metric = evaluate.load(str(module_dir), cache_dir=str(tmp_path))
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


def test_module_is_self_contained_and_equals_the_library_on_random_splits(module_dir):
    """No `bafenet` import (it runs from the Hub); VOC numbers equal `bafenet.metrics.box` on random data; the
    citation is `bafenet.CITATION`, the one the dataset and model cards print."""
    import numpy as np

    import bafenet
    from bafenet.metrics.box import voc_detection_metrics

    script = module_dir / "densesirst_voc.py"
    source = script.read_text()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= ALLOWED_IMPORTS, imported
    assert f"Generated from bafenet {bafenet.__version__}" in source and "Do not edit" in source
    assert undefined_names(source) == []
    spec = importlib.util.spec_from_file_location("densesirst_voc_generated", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._CITATION == bafenet.CITATION

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


def test_module_takes_exactly_the_voc_path_of_the_library(module_dir):
    """The generated script holds the library's own source of `voc_detection_metrics` and what it calls (nothing of
    the COCO, point or mask code), and the metric card has the front matter of an `evaluate` Space."""
    import inspect

    from bafenet.metrics import _checks, box

    source = (module_dir / "densesirst_voc.py").read_text()
    for function in (box.voc_detection_metrics, box.match_detections, box.MatchedDetections, box.average_precision,
                     _checks.align_by_image_id, _checks.check_boxes, _checks.safe_div):
        assert inspect.getsource(function) in source, function.__name__
    defined = {node.name for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & {"coco_detection_metrics", "check_points", "check_mask"}
    card = (module_dir / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front and "- evaluate\n- metric" in front
    assert "bibtex" in card and "evaluate.load(\"./densesirst_voc\")" in card
    assert sorted(p.name for p in module_dir.iterdir()) == sorted([MARKER, *evaluate_module_files()])


def test_evaluate_module_rejects_mismatched_ids(module_dir, no_network, tmp_path):
    metric = evaluate.load(str(module_dir), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="image ids do not match"):
        metric.compute(
            predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
            references=[{"image_id": "b", "boxes": [[0, 0, 4, 4]]}],
        )


def test_metric_export_cli_writes_a_marked_folder_and_refuses_foreign_ones(tmp_path, capsys, no_network):
    from bafenet.cli import main

    out = tmp_path / "my-metric"
    assert main(["metric", "export", "--out", str(out)]) == 0
    assert "my-metric.py" in capsys.readouterr().out
    assert json.loads((out / MARKER).read_text())["command"] == "metric export"
    metric = evaluate.load(str(out), cache_dir=str(tmp_path / "cache"))  # the script is named after the folder
    assert metric.compute(predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
                          references=[{"image_id": "a", "boxes": [[0, 0, 4, 4]]}])["mAP07"] == 1.0
    assert main(["metric", "export", "--out", str(out)]) == 0  # an earlier export of ours is replaced

    (out / "notes.txt").write_text("mine")  # added since: replaced only with --overwrite
    assert main(["metric", "export", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err

    foreign = tmp_path / "work"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    for argv in (["--out", str(foreign)], ["--out", str(foreign), "--overwrite"], ["--out", str(tmp_path / "a.b")]):
        assert main(["metric", "export", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out" in err and "Traceback" not in err, err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"] and not (tmp_path / "a.b").exists()
    assert not list(tmp_path.glob(".*bafenet*"))  # no lock or temporary folder left behind
