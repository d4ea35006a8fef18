"""Issue 13: no command deletes or overwrites what it did not write; every user error is one line naming the file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error

from bafenet.cli import main
from bafenet.data.build import build_dataset
from bafenet.data.devkit import DevkitError
from bafenet.outputs import MARKER, OutputLock, UserError
from bafenet.training import TrainingArguments


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder holding months of work: notes, a README.md, data/ and a .git/ (what the old build took for its own)."""
    folder = tmp_path / "work"
    (folder / "data" / "SIRSTdevkit").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "README.md").write_text("# my project\n")
    (folder / "notes.txt").write_text("precious")
    (folder / "data" / "SIRSTdevkit" / "results.csv").write_text("a,b\n1,2\n")
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder



def test_every_writing_command_leaves_a_user_folder_intact(user_folder, synthetic_devkit, synthetic_dataset_dir,
                                                           tiny_model_dir, tmp_path, capsys, monkeypatch):
    before = _snapshot(user_folder)
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    model, dataset, out = str(tiny_model_dir), str(synthetic_dataset_dir), str(user_folder)
    commands = [
        ["data", "synth", "--out", out, "--num-images", "4"],
        ["data", "synth", "--out", out, "--num-images", "4", "--overwrite"],
        ["data", "build", "--devkit", str(synthetic_devkit), "--out", out, "--no-stats"],
        ["data", "build", "--devkit", str(synthetic_devkit), "--out", out, "--no-stats", "--overwrite"],
        ["data", "stats", "--dataset", str(synthetic_devkit), "--out", out, "--no-plots"],
        ["train", "--dataset", dataset, "--model-name-or-path", model, "--output-dir", out, "--report-to", "none"],
        ["train", "--dataset", dataset, "--model-name-or-path", model, "--output-dir", out, "--report-to", "none",
         "--overwrite-output-dir"],
        ["evaluate", "--model", model, "--dataset", dataset, "--out", str(user_folder / "README.json")],
        ["predict", "--model", model, str(image), "--out", out],
        ["predict", "--model", model, str(image), "--out", out, "--overwrite"],
        ["quickstart", "--fast", "--out", out],
        ["quickstart", "--fast", "--out", out, "--overwrite"],
        ["export", "onnx", "--model", model, "--out", out],
        ["metric", "export", "--out", out],
        ["metric", "export", "--out", out, "--overwrite"],
    ]
    (user_folder / "README.json").write_text("{}")
    before = _snapshot(user_folder)
    for command in commands:
        assert main(command) != 0, command
        one_line_error(capsys, str(user_folder))
    # the current directory and a folder holding an input are never written over either
    monkeypatch.chdir(user_folder)
    assert main(["data", "build", "--devkit", str(synthetic_devkit), "--out", ".", "--overwrite"]) == 1
    one_line_error(capsys, "is the current directory")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "build", "--devkit", str(synthetic_devkit), "--out", str(synthetic_devkit.parent)]) == 1
    one_line_error(capsys, "holds the input")
    assert _snapshot(user_folder) == before
    assert not list(tmp_path.glob(".*bafenet*"))  # no lock or temporary folder left behind


def test_synth_refuses_a_real_devkit_and_build_its_clone(real_devkit, tmp_path, capsys):
    # a DenseSIRST clone given as --out: README.md + data/SIRSTdevkit is not an earlier build
    assert main(["data", "synth", "--out", str(real_devkit)]) == 1
    one_line_error(capsys, "was not written by bafenet")
    assert main(["data", "build", "--devkit", str(real_devkit), "--out", str(real_devkit.parents[1])]) == 1
    one_line_error(capsys, "holds the input")


def test_rebuild_replaces_only_its_own_files(synthetic_devkit, tmp_path, capsys):
    out = tmp_path / "densesirst"
    args = ["data", "build", "--devkit", str(synthetic_devkit), "--out", str(out), "--split", "test", "--no-stats"]
    assert main(args) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "data build" and "README.md" in marker["files"]
    (out / "my_notes.txt").write_text("added by the user")
    assert main(args) == 1
    one_line_error(capsys, "my_notes.txt", "--overwrite")
    assert (out / "my_notes.txt").read_text() == "added by the user"
    assert main(args + ["--overwrite"]) == 0  # the user's explicit choice
    assert not (out / "my_notes.txt").exists()
    assert main(["data", "synth", "--out", str(out)]) == 1  # another command's output
    one_line_error(capsys, "holds the output of `bafenet data build`")


def _held_elsewhere(lock: OutputLock) -> int:
    """Hold ``lock`` as another process would (another open file, to flock) with a record naming pid 1; returns the
    descriptor, whose closing releases it."""
    import fcntl

    lock.path.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": lock.command,
                                     "since": "2024-01-01T00:00:00"}))
    holder = os.open(lock.path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    return holder


def test_a_second_writer_is_kept_out_by_the_lock_and_a_dead_holder_is_taken_over(synthetic_devkit, tmp_path,
                                                                                  capsys):
    out = tmp_path / "densesirst"
    lock = OutputLock(out, "data build")
    holder = _held_elsewhere(lock)
    assert main(["data", "build", "--devkit", str(synthetic_devkit), "--out", str(out), "--split", "test"]) == 1
    one_line_error(capsys, "in use by `bafenet data build` (pid 1", str(lock.path))
    os.close(holder)  # the holder ends: the kernel releases its lock, the record stays and is ignored
    build_dataset(synthetic_devkit, out, splits=["test"], stats=False)
    assert (out / "README.md").is_file() and not lock.path.exists()


def test_bad_labels_and_split_ids_are_refused_at_build_time(synthetic_devkit, tmp_path, capsys):
    from bafenet.data.devkit import SirstDevkit

    devkit_dir = shutil.copytree(synthetic_devkit, tmp_path / "SIRSTdevkit")
    devkit = SirstDevkit(devkit_dir)
    image_id = devkit.split_ids("test_v2")[0]
    sky = np.asarray(Image.open(devkit.sky_mask_path(image_id))).copy()
    sky[sky == 255] = 128
    Image.fromarray(sky).save(devkit.sky_mask_path(image_id))
    with pytest.raises(DevkitError, match="values other than 0 and 255 \\(128"):
        build_dataset(devkit_dir, tmp_path / "out", splits=["test"], stats=False)
    Image.fromarray((sky > 0).astype(np.uint8)).save(devkit.sky_mask_path(image_id))  # {0, 1}
    assert main(["data", "build", "--devkit", str(devkit_dir), "--out", str(tmp_path / "out"), "--split", "test"]) == 1
    one_line_error(capsys, str(devkit.sky_mask_path(image_id)), "values other than 0 and 255")
    for bad in ("/etc/hostname", "../../outside", "PNGImages/Misc_1"):
        (devkit_dir / "Splits" / "test_v2.txt").write_text(f"Misc_1\n{bad}")
        with pytest.raises(DevkitError, match="is a path; ids name files inside the devkit"):
            devkit.split_ids("test_v2")
    assert not (tmp_path / "out").exists()


def test_a_missing_split_is_one_line_not_a_datasets_traceback(synthetic_devkit, tiny_model_dir, tmp_path, capsys):
    only_test = build_dataset(synthetic_devkit, tmp_path / "only_test", splits=["test"], stats=False)
    assert main(["train", "--dataset", str(only_test), "--model-name-or-path", str(tiny_model_dir), "--output-dir",
                 str(tmp_path / "run"), "--report-to", "none", "--dataloader-num-workers", "0"]) == 1
    one_line_error(capsys, "--dataset", "split 'train'")


@pytest.mark.parametrize("overrides, needle", [
    ("fpn_chanels=32", "unknown key 'fpn_chanels'"),
    ("fpn_channels=abc", "fpn_channels=\"abc\" must be a int"),
    ("fpn_channels=32.5", "must be a int"),
    ("freeze_backbone_bn=1", "must be a bool"),
])
def test_config_overrides_typos_and_bad_values_are_refused(overrides, needle, capsys):
    with pytest.raises(ValueError, match="valid keys: .*fpn_channels") as info:
        TrainingArguments(config_overrides=overrides)
    assert needle in str(info.value)
    assert main(["train", "--config-overrides", overrides]) == 2
    one_line_error(capsys, needle)


@pytest.mark.parametrize("option, overrides, needle", [
    ("--config-overrides", "normalization=imagenet", "pass it as --processor-overrides normalization=\"imagenet\""),
    ("--processor-overrides", "fpn_channels=32", "pass it as --config-overrides fpn_channels=32"),
    ("--processor-overrides", "max_detections=ten", "must be a int"),
    ("--processor-overrides", "detection_threshold=\"high\"", "must be a int or float"),
    ("--processor-overrides", "input_mode=tiles", "pass it as --config-overrides input_mode=\"tiles\""),
    ("--processor-overrides", "do_resize=false", "input geometry, which the config owns"),
    ("--processor-overrides", "tile_scale=3", "--config-overrides"),
])
def test_each_setting_is_given_to_its_owner(option, overrides, needle, capsys):
    """Model settings go to --config-overrides, image-processor settings to --processor-overrides; a key given to the
    wrong one names the right one."""
    assert main(["train", option, overrides]) == 2
    one_line_error(capsys, option, needle)


def test_a_bad_processor_setting_for_a_saved_model_is_one_line(tiny_model_dir, synthetic_dataset_dir, tmp_path,
                                                                capsys):
    assert main(["train", "--dataset", str(synthetic_dataset_dir), "--model-name-or-path", str(tiny_model_dir),
                 "--processor-overrides", "detection_threshold=2.0", "--output-dir", str(tmp_path / "run"),
                 "--report-to", "none", "--dataloader-num-workers", "0"]) == 1
    one_line_error(capsys, "--processor-overrides", "detection_threshold must be in [0, 1)")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def _fake_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb for Pillow), without pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_predict_unique_names_pixel_limit_and_no_lost_run(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, width in (("a.png", 40), ("a.jpg", 40), ("a-2.png", 40), ("b.png", 48)):
        Image.fromarray(np.full((40, width), 90, np.uint8)).save(folder / name)
    _fake_png(folder / "huge.png", 20000, 20000)
    out = tmp_path / "predictions"
    code = main(["predict", "--model", str(tiny_model_dir), str(folder), "--out", str(out),
                 "--operating-threshold", "0", "--max-pixels", "1900"])
    assert code == 1  # some inputs were skipped, the others predicted
    report = json.loads((out / "predictions.json").read_text())
    overlays = [r["overlay"] for r in report["images"]]
    assert len(overlays) == 3 and len(set(overlays)) == 3 and all((out / o).is_file() for o in overlays)
    reasons = {Path(e["file"]).name: e["reason"] for e in report["errors"]}
    assert set(reasons) == {"huge.png", "b.png"}  # b.png: 48 x 40 = 1920 pixels > 1900
    assert "400,000,000 pixels, over the --max-pixels limit" in reasons["huge.png"]
    capsys.readouterr()
    # the default limit (Pillow's) reports the bomb per file too, and the run still writes predictions.json
    assert main(["predict", "--model", str(tiny_model_dir), str(folder / "huge.png"), str(folder / "a.png"),
                 "--out", str(out), "--no-draw"]) == 1
    assert [Path(e["file"]).name for e in json.loads((out / "predictions.json").read_text())["errors"]] == ["huge.png"]


def test_predict_checks_out_and_model_before_loading(tiny_model_dir, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    taken = tmp_path / "taken.json"
    taken.write_text("mine")
    # --out is an existing file: refused before the (here missing) model is even looked at
    assert main(["predict", "--model", str(tmp_path / "nowhere"), str(image), "--out", str(taken)]) == 1
    one_line_error(capsys, f"--out {taken}: is a file")
    assert taken.read_text() == "mine"
    assert main(["predict", "--model", str(tmp_path / "runs" / "model"), str(image), "--out", str(tmp_path / "o")]) == 1
    one_line_error(capsys, "no such model folder")
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["predict", "--model", str(broken), str(image), "--out", str(tmp_path / "o")]) == 1
    one_line_error(capsys, str(weights))
    shutil.copy(tiny_model_dir / "model.safetensors", weights)
    (broken / "config.json").write_text("{not json")
    assert main(["export", "onnx", "--model", str(broken), "--out", str(tmp_path / "m.onnx")]) == 1
    one_line_error(capsys, str(broken / "config.json"), "not valid JSON")
    assert main(["evaluate", "--model", str(broken), "--dataset", "x", "--out", str(tmp_path / "r.json")]) == 1
    one_line_error(capsys, str(broken / "config.json"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.onnx").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["data", "build", "--devkit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]
    assert main(args) == 1
    one_line_error(capsys, "devkit folder does not exist", "--debug")
    with pytest.raises(DevkitError):
        main(["--debug", *args])
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(UserError, match="is or holds the input"):
        main(["predict", "--model", "x", str(tmp_path / "taken"), "--out", str(tmp_path / "taken"), "--debug"])


def _predictions_file(dataset_dir: Path, path: Path) -> Path:
    from datasets import load_dataset

    ids = load_dataset(str(dataset_dir), split="test")["image_id"]
    path.write_text(json.dumps([{"image_id": i, "boxes": [], "scores": []} for i in ids]))
    return path


def test_no_output_is_or_holds_or_lies_inside_any_input(tiny_model_dir, synthetic_dataset_dir, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    project = tmp_path / "P"
    assert main(["predict", "--model", str(tiny_model_dir), str(image), "--out", str(project), "--no-draw"]) == 0
    shutil.copytree(tiny_model_dir, project / "mymodel")  # the user keeps a model inside an earlier output
    model = tmp_path / "M"
    shutil.copytree(tiny_model_dir, model)
    predictions = _predictions_file(synthetic_dataset_dir, tmp_path / "preds.json")
    onnx = tmp_path / "exported" / "model.onnx"  # an input like the model: never written over, into or around
    onnx.parent.mkdir()
    onnx.write_bytes(b"onnx bytes")
    onnx_json = onnx.with_suffix(".json")
    onnx_json.write_bytes(b"onnx bytes")
    dataset = str(synthetic_dataset_dir)
    before = {**_snapshot(project), **_snapshot(model), "preds": predictions.read_bytes(), "onnx": onnx.read_bytes(),
              "onnx_json": onnx_json.read_bytes()}
    refused = [
        (["predict", "--model", str(project / "mymodel"), str(image), "--out", str(project), "--overwrite"],
         "holds the input"),
        (["predict", "--model", str(model), str(image), "--out", str(model / "preds"), "--overwrite"],
         "lies inside the input"),
        (["predict", "--model", str(tiny_model_dir), str(tmp_path), "--out", str(tmp_path / "out")],
         "lies inside the input"),
        (["export", "onnx", "--model", str(model), "--out", str(model / "model.safetensors"), "--overwrite"],
         "lies inside the input"),
        (["evaluate", "--model", str(model), "--dataset", dataset, "--out", str(model / "config.json"),
          "--overwrite"], "lies inside the input"),
        (["evaluate", "--predictions", str(predictions), "--dataset", dataset, "--out", str(predictions),
          "--overwrite"], "is or holds the input"),
        # an --out that is the --onnx file, whatever the file is called (evaluate writes .json only)
        (["evaluate", "--model", str(model), "--onnx", str(onnx_json), "--dataset", dataset, "--out",
          str(onnx_json), "--overwrite"], "is or holds the input"),
        (["predict", "--model", str(model), "--onnx", str(onnx), str(image), "--out", str(onnx.parent),
          "--overwrite"], "holds the input"),
        (["data", "stats", "--dataset", dataset, "--out", str(synthetic_dataset_dir / "stats2"), "--overwrite"],
         "lies inside the input"),
        (["train", "--dataset", dataset, "--output-dir", str(synthetic_dataset_dir / "run"), "--report-to",
          "none"], "lies inside the input"),
    ]
    for command, needle in refused:
        assert main(command) == 1, command
        one_line_error(capsys, needle)
    assert {**_snapshot(project), **_snapshot(model), "preds": predictions.read_bytes(), "onnx": onnx.read_bytes(),
            "onnx_json": onnx_json.read_bytes()} == before


def test_an_out_that_is_a_symbolic_link_is_refused_before_writing(tmp_path, capsys):
    target = tmp_path / "target"
    assert main(["metric", "export", "--out", str(target)]) == 0
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    before = _snapshot(target)
    for command in (["metric", "export", "--out", str(link), "--overwrite"],
                    ["evaluate", "--predictions", "p.json", "--dataset", "d", "--out", str(tmp_path / "r.json")]):
        if command[0] == "evaluate":
            (tmp_path / "r.json").symlink_to(tmp_path / "elsewhere.json")
        assert main(command) == 1
        one_line_error(capsys, "is a symbolic link", "pass the target itself")
    assert link.is_symlink() and _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "r.json", "target"]


def test_an_edit_of_equal_size_is_detected_and_old_size_markers_still_read(tmp_path, capsys):
    out = tmp_path / "m1"
    assert main(["metric", "export", "--out", str(out)]) == 0
    app = out / "app.py"
    text = app.read_text()
    app.write_text(text.replace("import", "IMPORT", 1))  # same size, other content
    assert main(["metric", "export", "--out", str(out)]) == 1
    one_line_error(capsys, "app.py", "--overwrite")
    assert app.read_text() != text
    marker = json.loads((out / MARKER).read_text())
    marker["files"] = {rel: entry["size"] for rel, entry in marker["files"].items()}  # an older, size-only marker
    (out / MARKER).write_text(json.dumps(marker))
    assert main(["metric", "export", "--out", str(out)]) == 0  # same sizes: ours


def test_after_a_full_disk_the_next_run_succeeds(tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "m1"
    lock = OutputLock(out, "metric export")
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    assert main(["metric", "export", "--out", str(out)]) == 1
    one_line_error(capsys, str(lock.path), "No space left on device", "free some space")
    monkeypatch.setattr(os, "write", real_write)
    lock.path.write_text("")  # what a full disk left behind before: an empty lock file nobody holds
    assert main(["metric", "export", "--out", str(out)]) == 0
    assert not lock.path.exists()


def test_abandoned_temporary_siblings_are_removed_by_the_next_run(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "m1"
    abandoned = [tmp_path / f".m1.bafenet-tmp-{dead}", tmp_path / f".m1.bafenet-old-{dead}"]
    from bafenet.outputs import write_marker

    for folder in abandoned:  # as a killed run leaves them: the marker is written first into a temporary folder
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "big.bin").write_bytes(b"x" * 1000)
        write_marker(folder, "metric export", finished=False)
    others = [tmp_path / f".m2.bafenet-tmp-{dead}", tmp_path / ".m1.bafenet-tmp-notapid", tmp_path / "m1.txt"]
    for other in others:
        other.write_text("not ours to delete")
    lookalike = tmp_path / f".m1.bafenet-tmp-{dead + 1_000_000}"  # bafenet's name, no marker: a user's folder
    (lookalike / "keep").mkdir(parents=True)
    assert main(["metric", "export", "--out", str(out)]) == 0
    assert not any(folder.exists() for folder in abandoned) and all(other.exists() for other in others)
    assert (lookalike / "keep").is_dir()
    from bafenet.outputs import written_file

    leftover = tmp_path / f".r.bafenet-tmp-{dead}.json"
    leftover.write_text("{")
    with written_file(tmp_path / "r.json") as tmp:
        tmp.write_text("{}")
    assert not leftover.exists()


def test_evaluate_keeps_a_replaced_pr_curve_and_takes_a_lock(synthetic_dataset_dir, tmp_path, capsys):
    predictions = _predictions_file(synthetic_dataset_dir, tmp_path / "preds.json")
    out = tmp_path / "r.json"
    command = ["evaluate", "--predictions", str(predictions), "--dataset", str(synthetic_dataset_dir), "--out",
               str(out)]
    assert main(command) == 0
    assert main(command) == 0  # its own earlier output is replaced
    curve = tmp_path / "r_pr_curve.png"
    curve.write_bytes(b"the user's own picture")
    assert main(command) == 1
    one_line_error(capsys, "r_pr_curve.png", "--overwrite")
    assert curve.read_bytes() == b"the user's own picture"
    holder = _held_elsewhere(OutputLock(out, "evaluate"))  # a second evaluate into the same file
    assert main(command + ["--overwrite"]) == 1
    one_line_error(capsys, "in use by `bafenet evaluate` (pid 1")
    os.close(holder)
    assert main(command + ["--overwrite"]) == 0
