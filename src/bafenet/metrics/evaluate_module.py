"""The VOC box metrics as a standalone Hugging Face ``evaluate`` module, generated from this library.

An ``evaluate`` module runs from a folder or a Hub Space without ``bafenet`` installed, so it has to be one
self-contained script. Rather than a copy of the VOC code kept in the tree, `evaluate_module_files` builds it from the
library each time:

1. a header: what it is, the bafenet version it was generated from, "do not edit";
2. the imports (`_IMPORTS`: collections, dataclasses, typing, datasets, evaluate, numpy);
3. the source of `bafenet.metrics.box.voc_detection_metrics` and of every function, class and constant of
   `bafenet.metrics._checks` / `bafenet.metrics.box` it uses, transitively, in library order (cut from
   ``inspect.getsource`` of the two modules at the definitions ``ast`` finds);
4. ``_DESCRIPTION``, ``_KWARGS_DESCRIPTION`` and ``_CITATION`` (`bafenet.CITATION`), then the ``evaluate.Metric``
   class (`_METRIC_CLASS`), which calls ``voc_detection_metrics``.

The result is compiled and every global name it uses is checked to be defined (`undefined_names`), so a library change
that makes the VOC path call something new fails here, not on the Hub. ``evaluate.load(path)`` looks for the script
named after its folder (or Hub repo), hence ``<name>/<name>.py``.

`evaluate_module_files` adds its metric card (README.md, with the front matter of an ``evaluate`` Space), ``app.py``
(the Space's widget) and ``requirements.txt``. This module only makes text: `bafenet.metric_export`
(``bafenet metric export --out DIR``) writes the files into a folder, ``bafenet push --metric-repo NS/NAME``
publishes them as a Hub Space.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import symtable
from pathlib import Path
from types import ModuleType

from . import _checks, box

__all__ = ["DEFAULT_NAME", "SPACE_SDK", "check_module_name", "evaluate_module_files", "evaluate_module_source",
           "undefined_names"]

DEFAULT_NAME = "densesirst_voc"
SPACE_SDK = "gradio"  # what `evaluate-cli create` makes: the metric card's front matter and the Space's app.py
_LIBRARY: tuple[ModuleType, ...] = (_checks, box)  # in import order: box imports from _checks
_ROOT = "voc_detection_metrics"
_MODULE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # no dot: evaluate imports the script by this name

_HEADER = '''\
"""DenseSIRST box metrics as a Hugging Face `evaluate` module: VOC mAP07 / mAP12 / recall, mmdet-exact.

Generated from bafenet $version by `bafenet metric export`; do not edit: change bafenet and export again.
Self-contained (numpy, datasets, evaluate; no `bafenet` import), so it runs from a folder or the Hub::

    import evaluate
    metric = evaluate.load("./$name")  # the folder holding this file, or a Hub Space: "<namespace>/$name"
    metric.add_batch(predictions=[{"image_id": "Misc_1", "boxes": [[203, 36, 206, 40]], "scores": [0.9]}],
                     references=[{"image_id": "Misc_1", "boxes": [[203, 36, 206, 40]]}])
    metric.compute()  # {"mAP07": 1.0, "mAP12": 1.0, "recall": 1.0, ...}

The functions below are the VOC path of `bafenet.metrics._checks` and `bafenet.metrics.box` in bafenet $version,
`voc_detection_metrics` and what it calls, verbatim. COCO AP: `bafenet.metrics.box.coco_detection_metrics`.
"""
# Generated from bafenet $version (bafenet.metrics.evaluate_module). Do not edit.
'''

_IMPORTS = """\
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import datasets
import evaluate
import numpy as np
"""

_DESCRIPTION = """\
Box-level detection metrics for DenseSIRST (single class "target"). VOC AP at an IoU threshold (default 0.5) exactly
as mmdetection's eval_map: mAP07 = 11-point AP, mAP12 = area AP, recall = final recall over all detections, plus
precision/recall/F1 at a score threshold. `legacy_plus_one=True` (default) adds 1 to widths and heights in areas and
IoU like mmdet's legacy coordinates, which produced the BAFE-Net paper's numbers. (COCO AP:
`bafenet.metrics.box.coco_detection_metrics`.) Boxes are xyxy in original-image pixels, DenseSIRST XML convention
(0-based, x_max/y_max exclusive), the same on both sides.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one dict per image: "image_id" (str), "boxes" (list of [x1, y1, x2, y2]), "scores" (list of float).
    references: one dict per image: "image_id" (str), "boxes" (list of [x1, y1, x2, y2]). Every image must appear
        on both sides (empty lists for images without boxes); order does not matter.
    iou_threshold (float, default 0.5), legacy_plus_one (bool, default True), operating_threshold (float, default 0.5):
        see voc_detection_metrics.
Returns:
    dict with mAP07, mAP12, recall, precision, f1, precision_at_score, recall_at_score, f1_at_score, tp_at_score,
    fp_at_score, fn_at_score, best_f1, best_f1_score, num_images, num_targets, num_detections, iou_threshold,
    operating_threshold, legacy_plus_one
Examples:
    >>> metric = evaluate.load("./$name")
    >>> result = metric.compute(predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
    ...                         references=[{"image_id": "a", "boxes": [[0, 0, 4, 4]]}])
    >>> result["mAP07"], result["mAP12"], result["recall"]
    (1.0, 1.0, 1.0)
"""

_METRIC_CLASS = '''\
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DensesirstVoc(evaluate.Metric):
    def _info(self):
        box = datasets.List(datasets.List(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "image_id": datasets.Value("string"),
                        "boxes": box,
                        "scores": datasets.List(datasets.Value("float32")),
                    },
                    "references": {"image_id": datasets.Value("string"), "boxes": box},
                }
            ),
            reference_urls=["$paper_url", "https://github.com/GrokCV/DenseSIRST"],
        )

    def _compute(self, predictions, references, iou_threshold=0.5, legacy_plus_one=True, operating_threshold=0.5):
        return voc_detection_metrics(predictions, references, iou_threshold=iou_threshold,
                                     legacy_plus_one=legacy_plus_one, operating_threshold=operating_threshold)
'''

# The metric card: the front matter of an `evaluate` Space (what `evaluate-cli create` writes), then the text.
_CARD = """\
---
title: DenseSIRST VOC box metrics
emoji: 🎯
colorFrom: blue
colorTo: gray
sdk: $sdk
app_file: app.py
pinned: false
tags:
- evaluate
- metric
description: "VOC mAP07 / mAP12 / recall (mmdet-exact, legacy +1) for DenseSIRST box detections."
---

# DenseSIRST VOC box metrics

Generated from bafenet $version by `bafenet metric export` (do not edit: export again). Load it with
`evaluate.load("./$name")` from the folder holding `$name.py`,
or with `evaluate.load("<namespace>/$name")` from a Hub Space holding these files (`bafenet push --metric-repo`).
Self-contained: numpy, `datasets` and `evaluate` only, no `bafenet` import; its code is
that of `bafenet.metrics.box.voc_detection_metrics` (so are its numbers) and its citation is the BAFE-Net paper's.
COCO AP is `bafenet.metrics.box.coco_detection_metrics` (needs faster-coco-eval).

## Description

$description
## Inputs and outputs

```text
$kwargs_description```

## Citation

```bibtex
$citation
```
"""

_APP = """\
# The Space's widget (`evaluate`'s Gradio app); the metric itself is $name.py, beside this file.
from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

launch_gradio_widget(evaluate.load(str(Path(__file__).with_name("$name.py"))))
"""

_REQUIREMENTS = """\
evaluate>=0.4.6
datasets>=4
numpy
"""


def _fill(template: str, **values: str) -> str:
    """``template`` with each ``$key`` replaced (longest keys first, so ``$name`` never eats ``$name_x``)."""
    for key in sorted(values, key=len, reverse=True):
        template = template.replace(f"${key}", values[key])
    return template


def _string_constant(name: str, text: str) -> str:
    """``NAME = \"\"\"\\`` + text + ``\"\"\"``: a readable literal, checked to read back as ``text``."""
    literal = f'"""\\\n{text}"""'
    if '"""' in text or "\\" in text or ast.literal_eval(literal) != text:
        raise ValueError(f"{name} cannot be written as a plain triple-quoted string")
    return f"{name} = {literal}\n"


# -- the library's VOC path --------------------------------------------------------------------------------------------
def _definitions(module: ModuleType) -> dict[str, tuple[int, str, set[str]]]:
    """Top-level functions, classes and single-name constants of ``module``: name -> (line, source, names used).

    The source runs from the first decorator (or the comment lines right above the definition) to its last line.
    """
    source = inspect.getsource(module)
    lines = source.splitlines(keepends=True)
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
        else:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - {name}
        found[name] = (node.lineno, "".join(lines[start : node.end_lineno]), used)
    return found


def _voc_path() -> dict[ModuleType, list[str]]:
    """The source of ``voc_detection_metrics`` and of every library definition it uses, transitively, per module and
    in each module's order."""
    where: dict[str, tuple[ModuleType, int, str, set[str]]] = {}
    for module in _LIBRARY:
        for name, (line, source, used) in _definitions(module).items():
            if name in where:
                raise ValueError(f"{name} is defined in both {where[name][0].__name__} and {module.__name__}")
            where[name] = (module, line, source, used)
    needed, todo = set(), [_ROOT]
    while todo:
        name = todo.pop()
        if name in where and name not in needed:
            needed.add(name)
            todo += sorted(where[name][3])
    parts: dict[ModuleType, list[str]] = {module: [] for module in _LIBRARY}
    for name in sorted(needed, key=lambda n: (_LIBRARY.index(where[n][0]), where[n][1])):
        parts[where[name][0]].append(where[name][2])
    return parts


def undefined_names(source: str) -> list[str]:
    """Global names that ``source`` reads but neither defines, imports nor gets from builtins."""
    top = symtable.symtable(source, "<generated>", "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()} | set(dir(builtins))
    missing: set[str] = set()

    def visit(table: symtable.SymbolTable) -> None:
        missing.update(s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global())
        for child in table.get_children():
            visit(child)

    visit(top)
    return sorted(missing - defined)


def evaluate_module_source(name: str = DEFAULT_NAME) -> str:
    """The text of ``<name>.py``: header, imports, the library's VOC path, descriptions, citation, metric class.

    Raises ``SyntaxError`` when the result does not compile, ``ValueError`` when it uses a name it does not define
    (the library's VOC path now needs something `_IMPORTS` lacks). That the definitions come in a working order is
    checked by running the module (tests/test_metrics_evaluate_module.py)."""
    from bafenet import CITATION, PAPER_URL, __version__

    def section(title: str) -> str:
        return f"\n\n# -- {title} ".ljust(122, "-") + "\n"

    parts = _voc_path()
    source = (
        _fill(_HEADER, version=__version__, name=name) + "\n" + _IMPORTS
        + "".join(section(f"{module.__name__} (bafenet {__version__}), verbatim") + "\n\n".join(sources)
                  for module, sources in parts.items() if sources)
        + section("the evaluate module")
        + _string_constant("_DESCRIPTION", _DESCRIPTION) + "\n"
        + _string_constant("_KWARGS_DESCRIPTION", _fill(_KWARGS_DESCRIPTION, name=name)) + "\n"
        + _string_constant("_CITATION", CITATION) + "\n\n"
        + _fill(_METRIC_CLASS, paper_url=PAPER_URL)
    )
    compile(source, f"{name}.py", "exec")  # a SyntaxError names the line
    missing = undefined_names(source)
    if missing:
        raise ValueError(f"the generated {name}.py uses {', '.join(missing)} without defining or importing it; "
                         "extend bafenet.metrics.evaluate_module._IMPORTS")
    return source


def check_module_name(name: str, option: str = "--out", given: str | Path | None = None) -> str:
    """``name`` if ``evaluate.load`` can import a script of that name, else a `UserError` naming ``option`` and the
    value ``given`` there (default: ``name``)."""
    from bafenet.outputs import UserError

    if not _MODULE_NAME.fullmatch(name):
        raise UserError(f"{option} {given or name}: {name!r} cannot name an evaluate module (evaluate.load imports the "
                        f"script named after its folder or repo); use letters, digits, '_' and '-', e.g. "
                        f"{DEFAULT_NAME}")
    return name


def evaluate_module_files(name: str = DEFAULT_NAME) -> dict[str, str]:
    """Every file of the module, by name: ``<name>.py``, README.md (the metric card), app.py, requirements.txt."""
    from bafenet import CITATION, __version__

    check_module_name(name)
    card = _fill(_CARD, version=__version__, name=name, sdk=SPACE_SDK, description=_DESCRIPTION, citation=CITATION,
                 kwargs_description=_fill(_KWARGS_DESCRIPTION, name=name))
    return {f"{name}.py": evaluate_module_source(name), "README.md": card, "app.py": _fill(_APP, name=name),
            "requirements.txt": _REQUIREMENTS}
