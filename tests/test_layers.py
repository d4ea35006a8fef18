"""The import graph follows the README's architecture table: a module imports only from its own row and the rows
above it, every module of ``src/bafenet`` has a row, and no import chain comes back to where it started.

Imports are read with ``ast`` anywhere in a file: module level, inside functions and under ``TYPE_CHECKING`` all
count (a function-level import is a dependency too, only a later one). Importing ``bafenet.a.b`` counts as
importing ``a/b.py`` (or ``a/b/__init__.py``), not the parent packages Python also runs on the way.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bafenet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``bafenet.data.devkit``, ``bafenet.data`` = its ``__init__``)."""
    return {_module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``bafenet`` modules (keys of ``modules``) that the file imports, absolute or relative, anywhere in it."""
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            base_name = ".".join(p for p in base if p)
            found.update(f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in modules else base_name
                         for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name in modules} - {_module_name(path)}


@functools.cache
def _package_graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    return {name: frozenset(imported_modules(path, modules)) for name, path in modules.items()}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, for the whole package (read once per session, a fresh copy per call)."""
    return {name: set(imports) for name, imports in _package_graph().items()}


def readme_rows() -> list[tuple[str, list[str]]]:
    """The README's architecture table, top to bottom: (stage, files and folders under src/bafenet). Backticked
    names in parentheses are a folder's contents, named for the reader, and are left out."""
    text = (ROOT / "README.md").read_text().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[0] not in ("stage", "---"):
            rows.append((cells[0], re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[1]))))
    return rows


def row_of(module: str, rows: list[tuple[str, list[str]]]) -> int | None:
    """The row index of a dotted module: the longest README entry naming its file or a folder above it; a package's
    unlisted ``__init__`` takes the first row that lists something inside the package. None: in no row."""
    relative = "/".join(module.split(".")[1:])
    candidates = [f"{relative}.py", f"{relative}/__init__.py"] if relative else ["__init__.py"]
    best: tuple[int, int] | None = None  # (length of the entry, row)
    for index, (_, entries) in enumerate(rows):
        for entry in entries:
            if any(c == entry or (entry.endswith("/") and c.startswith(entry)) for c in candidates):
                best = max(best or (0, index), (len(entry), index))
    if best is not None:
        return best[1]
    inside = [i for i, (_, entries) in enumerate(rows) for e in entries if relative and e.startswith(f"{relative}/")]
    return min(inside) if inside else None


def layer_violations(graph: dict[str, set[str]], rows: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """Module -> what is wrong with it: imports from a lower row (``"name (stage)"``) or no row at all."""
    wrong: dict[str, list[str]] = {}
    for module, imports in sorted(graph.items()):
        own = row_of(module, rows)
        if own is None:
            wrong[module] = ["in no row of the README's architecture table"]
            continue
        below = sorted(f"{m} ({rows[r][0]})" for m in imports if (r := row_of(m, rows)) is not None and r > own)
        if below:
            wrong[module] = below
    return wrong


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_imports_only_from_its_row_and_the_rows_above():
    rows = readme_rows()
    assert [stage for stage, _ in rows][:3] == ["safety", "dataset", "samples"] and rows[-1][0] == "commands"
    assert layer_violations(import_graph(), rows) == {}


def test_the_import_graph_has_no_cycle():
    assert import_cycles(import_graph()) == []


def test_the_scan_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "bafenet.data.drawing" in graph["bafenet.data.stats.measure"]  # `from bafenet.data.drawing import ...`
    assert "bafenet.visualize" in graph["bafenet.predict"]  # `from .visualize import draw_detections`
    assert "bafenet.data.stats" in graph["bafenet.data.build"]  # `from .stats import ...` inside a function
    assert {"bafenet.metrics._checks", "bafenet.metrics.box"} <= graph["bafenet.metrics.evaluate_module"]


def test_data_is_split_into_the_readme_rows():
    rows = readme_rows()
    stage = {m: rows[row_of(m, rows)][0] for m in ("bafenet.data.devkit", "bafenet.data.transforms",
                                                   "bafenet.data.stats.plots", "bafenet.data",
                                                   "bafenet.models", "bafenet", "bafenet.__main__")}
    assert stage == {"bafenet.data.devkit": "dataset", "bafenet.data.transforms": "samples",
                     "bafenet.data.stats.plots": "statistics", "bafenet.data": "dataset", "bafenet.models": "model",
                     "bafenet": "safety", "bafenet.__main__": "commands"}


@pytest.mark.parametrize("planted", [
    {"bafenet.data.devkit": {"bafenet.data.transforms"}},  # dataset -> samples
    {"bafenet.data.sample": {"bafenet.data.stats.summary"}},  # dataset -> statistics
    {"bafenet.data.transforms": {"bafenet.data.stats"}},  # samples -> statistics
    {"bafenet.metrics.box": {"bafenet.metric_export"}},  # metrics -> publishing
])
def test_a_planted_violation_is_caught(planted):
    graph = {**import_graph(), **planted}
    assert list(layer_violations(graph, readme_rows())) == list(planted)


def test_a_module_in_no_row_and_a_planted_cycle_are_caught():
    rows = readme_rows()
    assert layer_violations({"bafenet.nowhere": set()}, rows) == {
        "bafenet.nowhere": ["in no row of the README's architecture table"]}
    graph = {**import_graph(), "bafenet.data.stats.plots": {"bafenet.data.stats.summary"}}
    assert import_cycles(graph) == [["bafenet.data.stats.plots", "bafenet.data.stats.summary"]]


# Library modules that may still use argparse, and why (everything else that parses a command line is in commands/)
ARGPARSE_ALLOWED = {
    "bafenet.inputs": "the deprecated-flag action shared by the training options and the commands",
    "bafenet.training.arguments": "the training option groups as an HfArgumentParser (as transformers' hf_argparser)",
    "bafenet.models.pretrained": "`python -m bafenet.models.pretrained`, the weight converter named in model messages",
}
COMMAND_LINE_MODULES = ("bafenet.cli", "bafenet.__main__", "bafenet.commands")


def command_line_code(modules: dict[str, Path]) -> dict[str, list[str]]:
    """Library module -> its command-line code: an argparse import (outside `ARGPARSE_ALLOWED`) and top-level
    ``run`` / ``main`` / ``add_arguments`` functions (``main`` and ``add_arguments`` allowed where argparse is)."""
    found: dict[str, list[str]] = {}
    for name, path in modules.items():
        if name.startswith(COMMAND_LINE_MODULES):
            continue
        tree = ast.parse(path.read_text())
        imports = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        imports |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        entry_points = {"run"} if name in ARGPARSE_ALLOWED else {"run", "main", "add_arguments"}
        wrong = [f"def {node.name}" for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name in entry_points]
        if "argparse" in imports and name not in ARGPARSE_ALLOWED:
            wrong.append("import argparse")
        if wrong:
            found[name] = wrong
    return found


def test_no_library_module_holds_command_line_code():
    assert command_line_code(_modules()) == {}
    assert all(name in _modules() for name in ARGPARSE_ALLOWED)


def test_every_command_of_the_cli_is_a_commands_module():
    from bafenet.cli import COMMANDS

    assert {module for module, _ in COMMANDS.values()} == {
        name for name in _modules() if name.startswith("bafenet.commands.")}


def test_planted_command_line_code_is_caught(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import argparse\n\ndef add_arguments(parser):\n    pass\n\ndef run(args):\n    return 0\n")
    assert command_line_code({"bafenet.planted": planted}) == {
        "bafenet.planted": ["def add_arguments", "def run", "import argparse"]}
