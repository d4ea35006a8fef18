"""No code from a model folder runs unless the user passes --trust-remote-code; nothing is unpickled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error

from bafenet.cli import main

pytestmark = pytest.mark.usefixtures("one_thread_module")



def _booby_trapped(tiny_model_dir: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A copy of the tiny model whose modeling_bafenet.py writes a sentinel file when it is imported."""
    folder, sentinel = tmp_path / name, tmp_path / f"{name}.ran"
    shutil.copytree(tiny_model_dir, folder)
    with open(folder / "modeling_bafenet.py", "a") as handle:
        handle.write(f"\nopen({str(sentinel)!r}, 'w').write('the folder code ran')\n")
    return folder, sentinel


def test_model_folder_code_runs_only_with_trust_remote_code(tiny_model_dir, synthetic_dataset_dir, tmp_path, capsys):
    model, sentinel = _booby_trapped(tiny_model_dir, tmp_path, "trapped_model_opt_in")
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(image)
    assert main(["predict", "--model", str(model), str(image), "--out", str(tmp_path / "p"), "--no-draw"]) == 0
    assert main(["evaluate", "--model", str(model), "--dataset", str(synthetic_dataset_dir), "--split", "test",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert main(["export", "onnx", "--model", str(model), "--out", str(tmp_path / "m.onnx"), "--no-check"]) == 0
    assert not sentinel.exists()
    assert main(["predict", "--model", str(model), str(image), "--out", str(tmp_path / "p2"), "--no-draw",
                 "--trust-remote-code"]) == 0
    assert sentinel.exists()


def test_auto_classes_load_the_installed_classes_without_remote_code(tiny_model_dir, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    import bafenet.models  # noqa: F401  (registers the Auto classes)

    model, sentinel = _booby_trapped(tiny_model_dir, tmp_path, "trapped_model_auto")
    assert type(AutoModelForObjectDetection.from_pretrained(model)).__module__.startswith("bafenet.models")
    assert type(AutoImageProcessor.from_pretrained(model)).__module__.startswith("bafenet.models")
    assert not sentinel.exists()


def test_foreign_model_pickles_and_broken_code_are_one_line(tiny_model_dir, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(image)
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_model_dir, foreign)
    config = json.loads((foreign / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**config, "model_type": "detr"}))
    assert main(["predict", "--model", str(foreign), str(image), "--out", str(tmp_path / "p")]) == 1
    one_line_error(capsys, str(foreign), "'detr'", "--trust-remote-code")

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    assert main(["train", "--dataset", str(tmp_path / "data"), "--model-name-or-path", str(pickled),
                 "--output-dir", str(tmp_path / "run"), "--report-to", "none"]) == 1
    one_line_error(capsys, "pytorch_model.bin", "pickle")

    broken = tmp_path / "broken_model_syntax"
    shutil.copytree(tiny_model_dir, broken)
    with open(broken / "modeling_bafenet.py", "a") as handle:
        handle.write("\ndef oops(:\n")
    assert main(["export", "onnx", "--model", str(broken), "--out", str(tmp_path / "m.onnx"),
                 "--trust-remote-code"]) == 1
    one_line_error(capsys, str(broken), "modeling_bafenet.py", "syntax error")
