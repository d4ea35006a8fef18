"""The dataset card (README.md) of a built DenseSIRST folder: YAML front matter the Hub and `load_dataset` read,
then prose documenting every column, the splits with their counts, the source, the licence and the citation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml

from .. import __version__
from .densesirst import CITATION, CONFIG_DESCRIPTIONS, FEATURES, HOMEPAGE, VERSION

SOURCE_COMMIT = "6f538c5070c38ecaa2b00f76859ca41be0a1a517"
PAPER = "https://arxiv.org/abs/2407.20078"


@dataclass
class SplitSummary:
    name: str  # dataset split, e.g. "train"
    devkit_split: str  # Splits/<devkit_split>.txt
    num_images: int
    num_targets: int
    num_bytes: int  # Arrow bytes of the split
    path_glob: str  # data files, relative to the dataset folder
    skipped: list[str] = field(default_factory=list)  # ids of the split file whose image is missing


@dataclass
class BuildSummary:
    configs: dict[str, list[SplitSummary]]  # config name -> splits
    default_config: str
    num_images: int  # distinct images over all configs
    num_targets: int
    synthetic: dict | None = None  # `bafenet data synth` parameters when built from a synthetic devkit


class _NoAliasDumper(yaml.SafeDumper):
    """Write repeated blocks (the features of each config) in full: no YAML anchors/aliases in the card."""

    def ignore_aliases(self, data) -> bool:
        return True


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return label
    return "100K<n<1M"


def card_metadata(summary: BuildSummary) -> dict:
    """The README YAML: `configs` (with `features`, which `load_dataset` enforces) and `dataset_info` per config."""
    features_yaml = FEATURES._to_yaml_list()
    configs, infos = [], []
    for name, splits in summary.configs.items():
        config = {"config_name": name}
        if name == summary.default_config:
            config["default"] = True
        config["data_files"] = [{"split": s.name, "path": s.path_glob} for s in splits]
        config["features"] = features_yaml
        configs.append(config)
        infos.append(
            {
                "config_name": name,
                "features": features_yaml,
                "splits": [{"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_images} for s in splits],
                "dataset_size": sum(s.num_bytes for s in splits),
            }
        )
    return {
        "pretty_name": "DenseSIRST (synthetic stand-in)" if summary.synthetic else "DenseSIRST",
        "license": "unknown",
        "task_categories": ["object-detection", "image-segmentation"],
        "size_categories": [_size_category(summary.num_images)],
        "tags": ["infrared", "small-target-detection", "dense-targets", "sky-segmentation", "point-supervision"]
        + (["synthetic"] if summary.synthetic else []),
        "configs": configs,
        "dataset_info": infos,
    }


COLUMNS = """\
| column | type | content and convention |
| --- | --- | --- |
| `image` | `Image` | the original PNG bytes, untouched: 8-bit grey (`L`) for almost all images, a few `RGB`/`RGBA` (convert with `.convert("L")`) |
| `image_id` | `int64` | stable integer id: the rank of `image_name` among all devkit ids (the HF object-detection schema) |
| `image_name` | `string` | file stem in the devkit (`PNGImages/<image_name>.png`) |
| `width`, `height` | `int32` | original image size in pixels |
| `objects.bbox` | `List(List(float32, 4))` | one box per target, COCO `[x, y, w, h]` in original pixels, 0-based: `x` = XML `xmin`, `w` = `xmax - xmin`. The XML's `xmax`/`ymax` are exclusive (last pixel + 1), so `[x, y, x + w, y + h]` are exactly the XML values and `w`/`h` are the pixel extents |
| `objects.category` | `List(ClassLabel)` | always `0` = `target` (single class) |
| `objects.area` | `List(float32)` | `w * h` of the box |
| `objects.id` | `List(int64)` | unique, stable target id: 1000 x `image_id` + index of the box in the XML |
| `points` | `List(List(float32, 2))` | point labels `(x, y)`, 0-based column/row, about the floor of each target's centroid; as many as boxes, **not** in box order |
| `target_mask` | `Image` (`L`) | all target pixels of the image, values {0, 255}, same size as the image |
| `sky_mask` | `Image` (`L`) | sky segmentation, values {0 = other, 255 = sky}, same size as the image |
"""


CHANGES = f"""\
## Changes

- **{VERSION}**: rows follow the Hugging Face object-detection schema (`image_id`, `objects` with `id`, `area`,
  `bbox`, `category`), so the transformers detection recipe (`format_image_annotations_as_coco` ->
  `DetrImageProcessor` / `RTDetrImageProcessor`) runs on it unchanged. `image_id` is now an **integer** (it was the
  file stem, a string); the file stem moved to the new `image_name` column. Every other column is unchanged.
- 1.0.0: first release (string `image_id`).
"""

LOCAL_COMMENT = "# run from the folder that contains {name}/"
HUB_COMMENT = "# from the Hugging Face Hub"


def card_for_hub(card: str, folder_name: str, repo_id: str) -> str:
    """The card of a dataset folder with its snippets rewritten to load ``repo_id`` from the Hub (for ``bafenet push``)."""
    card = card.replace(LOCAL_COMMENT.format(name=folder_name), HUB_COMMENT)
    return card.replace(f'load_dataset("{folder_name}"', f'load_dataset("{repo_id}"')


def render_card(summary: BuildSummary, stats_markdown: str | None = None, folder_name: str = "densesirst") -> str:
    """The whole README.md of a built dataset folder whose name is ``folder_name`` (what its snippets load)."""
    front = yaml.dump(card_metadata(summary), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=120)
    rows = []
    for config, splits in summary.configs.items():
        for s in splits:
            skipped = f"{len(s.skipped)} missing images skipped" if s.skipped else ""
            counts = f"{s.num_images:,} | {s.num_targets:,}"
            rows.append(f"| `{config}` | `{s.name}` | `{s.devkit_split}` | {counts} | {skipped} |")
    split_table = "\n".join(
        ["| config | split | devkit split file | images | targets | note |", "| --- | --- | --- | ---: | ---: | --- |"]
        + rows
    )
    configs = "\n".join(f"- `{name}`: {CONFIG_DESCRIPTIONS[name]}" for name in summary.configs)

    skipped_by_split = {
        s.devkit_split: s.skipped for splits in summary.configs.values() for s in splits if s.skipped
    }
    if skipped_by_split:
        unique = sorted({i for ids in skipped_by_split.values() for i in ids})
        lines = "\n".join(f"- `{split}` ({len(ids)}): {', '.join(ids)}" for split, ids in skipped_by_split.items())
        skipped = (
            f"## Skipped images\n\n**This build is incomplete.** It was made with `--skip-missing`: "
            f"{len(unique)} images listed in the split files were missing from the devkit's `PNGImages/` and are "
            f"left out (their annotations exist upstream). Per devkit split file:\n\n{lines}\n\n"
            "Restore them from GrokCV/DenseSIRST (e.g. `git archive HEAD data | tar -x` in a clone) and rebuild to "
            "get the complete dataset (1,024 images, 13,655 targets).\n\n"
        )
    else:
        skipped = ""

    first = next(iter(summary.configs))
    more_loads = ""
    if {"train", "validation"} <= {s.name for s in summary.configs.get("default", [])}:
        more_loads += (f'trainval = load_dataset("{folder_name}", split="train+validation")  '
                       "# = trainval_v2, the paper's training set\n")
    if "v1" in summary.configs and first != "v1":
        more_loads += f'v1 = load_dataset("{folder_name}", "v1")  # the SIRST-v1 (Misc_*) splits\n'
    first_split = summary.configs[first][0].name
    config_arg = "" if first == summary.default_config else f', "{first}"'
    stats = f"{stats_markdown.strip()}\n\n" if stats_markdown else ""
    incomplete = " (an incomplete build: see *Skipped images*)" if skipped else ""
    if summary.synthetic:
        synthetic = (
            f"> **Synthetic data.** This folder was built from a devkit written by `bafenet data synth` "
            f"(`{json.dumps(summary.synthetic, sort_keys=True)}`): generated images in the DenseSIRST layout, for tests "
            "and demos. It is not DenseSIRST; the description below is that of the real dataset.\n\n"
        )
    else:
        synthetic = ""
    return f"""---
{front}---

# DenseSIRST

{synthetic}{summary.num_images:,} single-frame infrared images{incomplete} with **{summary.num_targets:,}** small targets, most of
them in dense clusters, with **all four label types** of the original release: boxes, pixel masks, point labels and a sky
segmentation. Introduced with BAFE-Net in *Background Semantics Matter: Cross-Task Feature Exchange Network for
Clustered Infrared Small Target Detection With Sky-Annotated Dataset* ([arXiv 2407.20078]({PAPER})).

## Load it

```python
from datasets import load_dataset

ds = load_dataset("{folder_name}"{config_arg})  {LOCAL_COMMENT.format(name=folder_name)}
row = ds["{first_split}"][0]
row["image"], row["image_id"], row["image_name"], row["objects"]["bbox"], row["points"], row["target_mask"], row["sky_mask"]
{more_loads}```

## Configs and splits

{configs}

{split_table}

The paper trains on `train+validation` (= `trainval_v2`) and reports numbers on `test` (= `test_v2`).

{skipped}## Columns

One row per image.

{COLUMNS}
Boxes come from `SIRST/BBox/<id>.xml`, points from `SIRST/Point_label/<id>_pixels0.txt`, the target mask from
`SIRST/BinaryMask/<id>_pixels0.png` and the sky mask from `SkySeg/BinaryMask/<id>_pixels0.png` (the palette masks of
the devkit are pixel-identical copies). Every file was validated while building (PNG decodes, mask size = image size,
boxes inside the image with positive size, one point per box); masks that are already `L` {{0, 255}} are embedded
byte for byte. Note that mmdet-based code (including the official BAFE-Net) subtracts 1 from all four XML
coordinates when loading; this dataset keeps the XML values.

{stats}{CHANGES}
## Source

Built with `bafenet data build` (bafenet {__version__}) from `data/SIRSTdevkit` of [GrokCV/DenseSIRST]({HOMEPAGE})
at commit `{SOURCE_COMMIT}`. DenseSIRST re-uses the SIRST-v2 images and splits (YimianDai/open-sirst-v2) and adds
synthetic dense target clusters and the sky annotations.

## Licence

The upstream repository has **no licence file**. Treat the data as research data: use it for research, cite the
paper below, and do not redistribute it inside software packages. The card metadata says `license: unknown` for
this reason.

## Citation

```bibtex
{CITATION}
```
"""
