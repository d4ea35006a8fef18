"""Nothing imports from a layer above it: the data, metrics and model packages never import the stages built on them
(drawing, evaluation, prediction, training, publishing, the command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bafenet"
UPPER = {"visualize", "evaluation", "predict", "training", "quickstart", "hub", "model_card", "export_onnx", "cli"}


def _imported_modules(path: Path) -> set[str]:
    """Top-level ``bafenet`` modules a file imports (absolute or relative), anywhere in the file."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = (package[: len(package) - node.level + 1] if node.level else ()) + tuple(
                (node.module or "").split("."))
            parts = tuple(p for p in parts if p)
            names = [parts + (alias.name,) for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [tuple(alias.name.split(".")) for alias in node.names]
        else:
            continue
        found.update(name[1] for name in names if len(name) > 1 and name[0] == "bafenet")
    return found


@pytest.mark.parametrize("layer", ["data", "metrics", "models"])
def test_lower_layers_import_nothing_from_the_stages_above(layer):
    offenders = {str(path.relative_to(SRC)): sorted(_imported_modules(path) & UPPER)
                 for path in sorted((SRC / layer).rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_relative_and_absolute_imports(tmp_path):
    stats = SRC / "data" / "stats" / "measure.py"
    assert "data" in _imported_modules(stats)  # `from bafenet.data.drawing import densest_cluster`
    assert "visualize" in _imported_modules(SRC / "predict.py")  # `from .visualize import draw_detections`
