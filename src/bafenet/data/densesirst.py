"""DenseSIRST as a `datasets.GeneratorBasedBuilder`: the schema, the configs and the row of one image.

datasets >= 4 no longer runs loading scripts, so this builder is used from code, not by ``load_dataset("x.py")``::

    from bafenet.data.densesirst import DenseSirst
    builder = DenseSirst(config_name="default", data_dir="path/to/SIRSTdevkit")
    builder.download_and_prepare()
    test = builder.as_dataset(split="test")

``bafenet data build`` (`bafenet.data.build.build_dataset`) writes the same rows as Parquet shards plus a dataset
card, so that ``load_dataset("densesirst")`` works from the folder's parent, locally or on the Hub. Both paths share
`FEATURES`, `CONFIG_SPLITS`, `resolve_splits` and `example_from_sample` below.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Features, Image, List, Value

from .. import CITATION
from .devkit import DevkitError, EncodedSample, SirstDevkit

__all__ = [
    "CONFIG_SPLITS", "FEATURES", "CLASS_NAMES", "DenseSirst", "DenseSirstConfig", "example_from_sample",
    "object_id_bases", "resolve_splits", "missing_images_message",
]

logger = logging.getLogger(__name__)

# 2.0.0: rows follow the Hugging Face object-detection schema: `image_id` is an integer (it was the file stem, a
# string, which the transformers detection recipe cannot batch), the file stem moved to `image_name`.
VERSION = datasets.Version("2.0.0")
CLASS_NAMES = ["target"]
# config -> {dataset split: devkit split file (Splits/<name>.txt)}; split="train+validation" = trainval_<v>
CONFIG_SPLITS: dict[str, dict[str, str]] = {
    "default": {"train": "train_v2", "validation": "val_v2", "test": "test_v2"},
    "v1": {"train": "train_v1", "validation": "val_v1", "test": "test_v1"},
}
CONFIG_DESCRIPTIONS = {
    "default": "the DenseSIRST (v2) splits train_v2 / val_v2 / test_v2, over all images (1,024 in the full release).",
    "v1": "the SIRST-v1 splits train_v1 / val_v1 / test_v1, over the Misc_* images only (427 in the full release).",
}
OBJECT_ID_STRIDE = 1000  # objects.id = OBJECT_ID_STRIDE * image_id + index of the box in the XML

FEATURES = Features(
    {
        "image": Image(),
        "image_id": Value("int64"),
        "image_name": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "objects": {
            "bbox": List(List(Value("float32"), length=4)),
            "category": List(ClassLabel(names=CLASS_NAMES)),
            "area": List(Value("float32")),
            "id": List(Value("int64")),
        },
        "points": List(List(Value("float32"), length=2)),
        "target_mask": Image(mode="L"),
        "sky_mask": Image(mode="L"),
    }
)

HOMEPAGE = "https://github.com/GrokCV/DenseSIRST"
DESCRIPTION = (
    "DenseSIRST: single-frame infrared images with dense clusters of small targets, annotated with boxes, "
    "pixel masks, point labels and a sky segmentation (arXiv 2407.20078)."
)


def object_id_bases(devkit: SirstDevkit) -> dict[str, int]:
    """A stable ``objects.id`` base per image: OBJECT_ID_STRIDE x its integer ``image_id`` (the rank of its file stem
    among all ids of all split files)."""
    all_ids = sorted({i for name in devkit.split_names() for i in devkit.split_ids(name)})
    return {image_id: OBJECT_ID_STRIDE * rank for rank, image_id in enumerate(all_ids)}


def example_from_sample(sample: EncodedSample, object_id_base: int = 0) -> dict:
    """The dataset row of one validated image: integer ``image_id`` (``object_id_base // OBJECT_ID_STRIDE``), the file
    stem in ``image_name``, boxes as COCO [x, y, w, h] (xyxy = the XML values), PNGs as bytes."""
    n = len(sample.boxes)
    if n >= OBJECT_ID_STRIDE:
        raise DevkitError(f"{sample.image_path}: {n} targets; at most {OBJECT_ID_STRIDE - 1} are supported")
    xy, wh = sample.boxes[:, :2], sample.boxes[:, 2:] - sample.boxes[:, :2]
    image_id = sample.image_id
    return {
        "image": {"bytes": sample.image_png, "path": f"PNGImages/{image_id}.png"},
        "image_id": object_id_base // OBJECT_ID_STRIDE,
        "image_name": image_id,
        "width": sample.width,
        "height": sample.height,
        "objects": {
            "bbox": np.concatenate([xy, wh], axis=1).tolist(),
            "category": [0] * n,
            "area": (wh[:, 0] * wh[:, 1]).tolist(),
            "id": list(range(object_id_base, object_id_base + n)),
        },
        "points": sample.points.tolist(),
        "target_mask": {"bytes": sample.target_mask_png, "path": f"SIRST/BinaryMask/{image_id}_pixels0.png"},
        "sky_mask": {"bytes": sample.sky_mask_png, "path": f"SkySeg/BinaryMask/{image_id}_pixels0.png"},
    }


def missing_images_message(devkit: SirstDevkit, missing: dict[str, list[str]]) -> str:
    """'N images listed in split files are missing from PNGImages (per split counts): ids' (ids in file order)."""
    unique = list(dict.fromkeys(i for ids in missing.values() for i in ids))
    per_split = ", ".join(f"{split}: {len(ids)}" for split, ids in missing.items() if ids)
    return (
        f"{len(unique)} images listed in the split files are missing from {devkit.root / 'PNGImages'} "
        f"({per_split}): {', '.join(unique)}"
    )


def resolve_splits(
    devkit: SirstDevkit, splits: dict[str, str], skip_missing: bool = False
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Read the split files of ``splits`` ({dataset split: devkit split}) and check that every image exists.

    Returns (ids per dataset split, skipped ids per dataset split). Missing images raise a DevkitError listing
    them all, unless ``skip_missing``, in which case they are left out, logged and returned as skipped.
    """
    ids = {split: devkit.split_ids(name) for split, name in splits.items()}
    missing = {split: devkit.missing_images(split_ids) for split, split_ids in ids.items()}
    if any(missing.values()):
        message = missing_images_message(devkit, {splits[s]: m for s, m in missing.items()})
        if not skip_missing:
            raise DevkitError(
                f"{message}. Restore them, or pass --skip-missing (skip_missing=True) to build without them."
            )
        logger.warning("--skip-missing: leaving out %s", message)
    kept = {}
    for split, split_ids in ids.items():
        skip = set(missing[split])
        kept[split] = [i for i in split_ids if i not in skip]
    for split, split_ids in kept.items():
        if not split_ids:
            raise DevkitError(f"{devkit.root / 'Splits' / (splits[split] + '.txt')}: no image of this split exists")
    return kept, missing


@dataclass
class DenseSirstConfig(datasets.BuilderConfig):
    """A DenseSIRST config: which devkit split file feeds which dataset split; ``data_dir`` = the SIRSTdevkit."""

    splits: dict[str, str] = field(default_factory=dict)
    skip_missing: bool = False


class DenseSirst(datasets.GeneratorBasedBuilder):
    """DenseSIRST from a local SIRSTdevkit folder (pass ``data_dir=``). Configs ``default`` (v2 splits) and ``v1``."""

    BUILDER_CONFIG_CLASS = DenseSirstConfig
    BUILDER_CONFIGS = [
        DenseSirstConfig(name=name, version=VERSION, description=CONFIG_DESCRIPTIONS[name], splits=dict(splits))
        for name, splits in CONFIG_SPLITS.items()
    ]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 100  # rows per Arrow record batch / Parquet row group (images are large)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=DESCRIPTION, features=FEATURES, homepage=HOMEPAGE, citation=CITATION, license="unknown"
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        if not self.config.data_dir:
            raise ValueError("DenseSirst needs the devkit folder: DenseSirst(data_dir='path/to/SIRSTdevkit')")
        devkit = SirstDevkit(Path(self.config.data_dir))
        ids, _ = resolve_splits(devkit, self.config.splits, skip_missing=self.config.skip_missing)
        bases = object_id_bases(devkit)
        return [
            datasets.SplitGenerator(
                name=split,
                gen_kwargs={"devkit_dir": str(devkit.root), "image_ids": split_ids, "id_bases": bases},
            )
            for split, split_ids in ids.items()
        ]

    def _generate_examples(self, devkit_dir: str, image_ids: list[str], id_bases: dict[str, int]):
        devkit = SirstDevkit(devkit_dir)
        for image_id in image_ids:
            yield image_id, example_from_sample(devkit.read_encoded(image_id), id_bases[image_id])
