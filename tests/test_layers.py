"""Nothing imports from a layer above it: each stage of the README's architecture table imports only from the rows
above it (the data, metrics and model packages never import drawing, evaluation, prediction, training, publishing or
the command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bafenet"
UPPER = {"visualize", "inference", "evaluation", "predict", "training", "quickstart", "hub", "model_card", "export_onnx", "cli"}


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


# The README's architecture table, top to bottom: a module may import from its own row and the rows above.
STAGES = [
    {"outputs", "inputs", "__init__", "__main__"},
    {"data"},
    {"models"},
    {"metrics"},
    {"inference", "evaluation"},
    {"training", "checkpoints"},
    {"predict", "visualize", "export_onnx"},
    {"hub", "model_card"},
    {"cli", "quickstart"},
]


def _stage(module: str) -> int:
    """The row of a top-level module; names of the package itself (`from bafenet import CITATION`) are row 0."""
    return next((i for i, names in enumerate(STAGES) if module in names), 0)


def test_every_stage_imports_only_from_the_rows_above_it():
    wrong = {}
    for path in sorted(SRC.rglob("*.py")):
        own = path.relative_to(SRC).parts[0].removesuffix(".py")
        above = sorted(m for m in _imported_modules(path) if _stage(m) > _stage(own))
        if above and own != "__main__":
            wrong[str(path.relative_to(SRC))] = above
    assert wrong == {}
