"""The built dataset folder: `load_dataset` (both configs, by name from the parent folder), rows equal to the devkit
files, the card, missing images, the CLI, and the real `test` split."""

from __future__ import annotations

import io
import logging
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from bafenet.cli import main as cli_main
from bafenet.data.build import build_dataset
from bafenet.data.densesirst import FEATURES, DenseSirst
from bafenet.data.devkit import DevkitError, SirstDevkit


def load(path: Path, *args, tmp_path: Path, **kwargs):
    return datasets.load_dataset(str(path), *args, cache_dir=str(tmp_path / "hf_cache"), **kwargs)


def xml_boxes(path: Path) -> list[list[float]]:
    root = ET.parse(path).getroot()
    return [[float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]


def test_folder_holds_only_parquet_and_the_card(synthetic_dataset_dir):
    files = {p.relative_to(synthetic_dataset_dir).as_posix() for p in synthetic_dataset_dir.rglob("*") if p.is_file()}
    assert "README.md" in files and not any(f.endswith(".py") for f in files)
    for config in ("default", "v1"):
        for split in ("train", "validation", "test"):
            assert f"data/{config}/{split}-00000-of-00001.parquet" in files


def test_load_dataset_both_configs_and_trainval(synthetic_devkit, synthetic_dataset_dir, tmp_path):
    devkit = SirstDevkit(synthetic_devkit)
    assert datasets.get_dataset_config_names(str(synthetic_dataset_dir)) == ["default", "v1"]
    default = load(synthetic_dataset_dir, tmp_path=tmp_path)
    assert set(default) == {"train", "validation", "test"}
    assert default["train"].features == FEATURES
    for split, split_file in (("train", "train_v2"), ("validation", "val_v2"), ("test", "test_v2")):
        assert default[split]["image_name"] == devkit.split_ids(split_file)
    v1 = load(synthetic_dataset_dir, "v1", tmp_path=tmp_path)
    for split, split_file in (("train", "train_v1"), ("validation", "val_v1"), ("test", "test_v1")):
        assert v1[split]["image_name"] == devkit.split_ids(split_file)
    trainval = load(synthetic_dataset_dir, split="train+validation", tmp_path=tmp_path)
    assert trainval["image_name"] == devkit.split_ids("trainval_v2")
    # integer image_id (HF object-detection schema): the rank of the file stem among all devkit ids, stable
    all_ids = sorted({i for name in devkit.split_names() for i in devkit.split_ids(name)})
    assert trainval["image_id"] == [all_ids.index(name) for name in trainval["image_name"]]


def test_load_dataset_by_name_from_the_parent_folder(synthetic_dataset_dir, tmp_path, monkeypatch):
    assert synthetic_dataset_dir.name == "densesirst"
    monkeypatch.chdir(synthetic_dataset_dir.parent)
    test = datasets.load_dataset("densesirst", split="test", cache_dir=str(tmp_path / "hf_cache"))
    assert test.num_rows >= 1 and test.features == FEATURES


def test_rows_equal_the_devkit_files(synthetic_devkit, synthetic_dataset_dir, tmp_path):
    devkit = SirstDevkit(synthetic_devkit)
    ds = load(synthetic_dataset_dir, tmp_path=tmp_path)
    raw = ds.cast_column("image", datasets.Image(decode=False))
    object_ids = []
    for split in ds:
        for row, raw_row in zip(ds[split], raw[split]):
            image_id = row["image_name"]
            sample = devkit.read(image_id)
            assert raw_row["image"]["bytes"] == devkit.image_path(image_id).read_bytes()  # embedded, not re-encoded
            assert (row["width"], row["height"]) == row["image"].size == (sample.width, sample.height)
            bbox = np.array(row["objects"]["bbox"], dtype=np.float32).reshape(-1, 4)
            xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
            assert xyxy.tolist() == xml_boxes(devkit.bbox_path(image_id))
            assert row["objects"]["area"] == (bbox[:, 2] * bbox[:, 3]).tolist()
            assert row["objects"]["category"] == [0] * len(bbox)
            assert np.array_equal(np.array(row["points"], dtype=np.float32).reshape(-1, 2), sample.points)
            for column, expected in (("target_mask", sample.target_mask), ("sky_mask", sample.sky_mask)):
                mask = row[column]
                assert mask.mode == "L" and set(np.unique(mask).tolist()) <= {0, 255}
                assert np.array_equal(np.asarray(mask) > 0, expected)
            object_ids += row["objects"]["id"]
            assert [i // 1000 for i in row["objects"]["id"]] == [row["image_id"]] * len(bbox)
    assert len(object_ids) == len(set(object_ids))
    assert ds["train"].features["objects"]["category"].feature.names == ["target"]


def test_card_documents_configs_columns_counts_source_and_licence(synthetic_devkit, synthetic_dataset_dir):
    text = (synthetic_dataset_dir / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "unknown" and "object-detection" in meta["task_categories"]
    assert [c["config_name"] for c in meta["configs"]] == ["default", "v1"]
    assert meta["configs"][0]["default"] is True and "features" in meta["configs"][0]
    assert datasets.Features._from_yaml_list(meta["configs"][0]["features"]) == FEATURES
    card = huggingface_hub.DatasetCard.load(synthetic_dataset_dir / "README.md")
    assert card.data.license == "unknown" and card.data.pretty_name == "DenseSIRST (synthetic stand-in)"
    assert "**Synthetic data.**" in text and '"seed": 0' in text  # never mistaken for the real dataset
    devkit = SirstDevkit(synthetic_devkit)
    test_ids = devkit.split_ids("test_v2")
    num_targets = sum(len(devkit.read_encoded(i).boxes) for i in test_ids)
    assert f"| `default` | `test` | `test_v2` | {len(test_ids)} | {num_targets} |" in body
    for needle in ("objects.bbox", "exclusive", "points", "target_mask", "sky_mask", "2407.20078", "6f538c5",
                   "no licence file", "@article", 'load_dataset("densesirst")', "run from the folder that contains",
                   "`image_name`", "## Changes", "**2.0.0**"):
        assert needle in body, needle


def test_generator_based_builder_gives_the_same_rows(synthetic_devkit, synthetic_dataset_dir, tmp_path):
    builder = DenseSirst(config_name="v1", data_dir=str(synthetic_devkit), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    built = builder.as_dataset(split="test")
    assert built.features == FEATURES
    built = built.cast_column("image", datasets.Image(decode=False))
    parquet = load(synthetic_dataset_dir, "v1", split="test", tmp_path=tmp_path).cast_column(
        "image", datasets.Image(decode=False)
    )
    assert built.to_list() == parquet.to_list()


def test_missing_images_fail_with_a_list_or_are_skipped_and_reported(synthetic_devkit, tmp_path, caplog):
    devkit_dir = Path(shutil.copytree(synthetic_devkit, tmp_path / "SIRSTdevkit"))
    devkit = SirstDevkit(devkit_dir)
    gone = devkit.split_ids("train_v2")[:2]
    for image_id in gone:
        devkit.image_path(image_id).unlink()
    with pytest.raises(DevkitError, match=r"2 images listed in the split files are missing") as info:
        build_dataset(devkit_dir, tmp_path / "out", stats=False)
    assert all(i in str(info.value) for i in gone) and "--skip-missing" in str(info.value)
    assert not (tmp_path / "out").exists()

    with caplog.at_level(logging.WARNING, logger="bafenet"):
        out = build_dataset(devkit_dir, tmp_path / "out", skip_missing=True, configs=["default"], stats=False)
    assert all(i in caplog.text for i in gone)
    card = (out / "README.md").read_text()
    assert "## Skipped images" in card and f"`train_v2` (2): {', '.join(gone)}" in card
    train = load(out, split="train", tmp_path=tmp_path)
    assert train["image_name"] == [i for i in devkit.split_ids("train_v2") if i not in gone]


@pytest.mark.slow  # two worker processes
def test_parallel_build_is_identical_and_reports_bad_files(synthetic_devkit, synthetic_dataset_dir, tmp_path):
    out = build_dataset(synthetic_devkit, tmp_path / "densesirst", num_proc=2, configs=["default"], stats=False)
    for split in ("train", "validation", "test"):
        name = f"data/default/{split}-00000-of-00001.parquet"
        assert pq.read_table(out / name).equals(pq.read_table(synthetic_dataset_dir / name))

    devkit_dir = Path(shutil.copytree(synthetic_devkit, tmp_path / "SIRSTdevkit"))
    bad = SirstDevkit(devkit_dir).sky_mask_path(SirstDevkit(devkit_dir).split_ids("test_v2")[-1])
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DevkitError, match="corrupt or truncated PNG") as info:
        build_dataset(devkit_dir, tmp_path / "bad", num_proc=2, splits=["test"], stats=False)
    assert str(bad) in str(info.value)


def test_cli_build_restricts_splits_and_replaces_only_earlier_builds(synthetic_devkit, tmp_path, capsys):
    out = tmp_path / "densesirst"
    args = ["data", "build", "--devkit", str(synthetic_devkit), "--out", str(out), "--split", "test", "--no-stats"]
    assert cli_main(args) == 0
    assert cli_main(args + ["--config", "v1"]) == 0  # rebuilding over an earlier build is fine
    assert {p.name for p in (out / "data").iterdir()} == {"v1"}
    assert list((out / "data" / "v1").iterdir()) == [out / "data" / "v1" / "test-00000-of-00001.parquet"]
    assert "load_dataset" in capsys.readouterr().out

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    assert cli_main(["data", "build", "--devkit", str(synthetic_devkit), "--out", str(tmp_path / "other")]) == 1
    assert "was not written by bafenet" in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    assert cli_main(["data", "build", "--devkit", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "devkit folder does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['tset'\]"):
        build_dataset(synthetic_devkit, out, splits=["tset"])
    with pytest.raises(ValueError, match=r"unknown config\(s\) \['v3'\]"):
        build_dataset(synthetic_devkit, out, configs=["v3"])


@pytest.mark.real_data
def test_real_devkit_needs_skip_missing(real_devkit, tmp_path):
    with pytest.raises(DevkitError, match=r"172 images listed in the split files are missing .*iraytek-167"):
        build_dataset(real_devkit, tmp_path / "densesirst", stats=False)


@pytest.mark.slow  # reads the real test split (seconds)
@pytest.mark.real_data
def test_real_test_split_is_complete_and_equal_to_the_xml(real_devkit, tmp_path):
    out = build_dataset(real_devkit, tmp_path / "densesirst", configs=["default"], splits=["test"], stats=False)
    test = load(out, split="test", tmp_path=tmp_path)
    assert test.num_rows == 256
    assert test["image_name"] == SirstDevkit(real_devkit).split_ids("test_v2")
    raw = test.cast_column("target_mask", datasets.Image(decode=False)).cast_column(
        "sky_mask", datasets.Image(decode=False)
    ).remove_columns("image")
    num_targets = 0
    for row in raw:
        bbox = np.array(row["objects"]["bbox"], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
        assert xyxy.tolist() == xml_boxes(real_devkit / "SIRST" / "BBox" / f"{row['image_name']}.xml")
        assert len(row["points"]) == len(bbox) >= 1
        for column in ("target_mask", "sky_mask"):
            assert Image.open(io.BytesIO(row[column]["bytes"])).size == (row["width"], row["height"])
        num_targets += len(bbox)
    assert num_targets == 3454
    card = (out / "README.md").read_text()
    assert "| `default` | `test` | `test_v2` | 256 | 3,454 |" in card and "Synthetic data" not in card
