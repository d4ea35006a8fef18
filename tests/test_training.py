"""`accelerate launch train_accelerate.py`: recipe pieces, multi-process DDP, exact kill-and-resume, NaN stop, overfit."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bafenet.commands.train import main
from bafenet.training import (
    EpochShuffleSampler,
    RecipeSchedule,
    TrainingArguments,
    list_checkpoints,
    parameter_groups,
    parse_config_overrides,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "train_accelerate.py"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_args(dataset: Path, model: Path, out: Path) -> list[str]:
    return ["--dataset", str(dataset), "--model-name-or-path", str(model), "--output-dir", str(out),
            "--dataloader-num-workers", "0", "--train-repeats", "1", "--per-device-eval-batch-size", "2"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """In-process runs each build an Accelerator: reset accelerate's process-wide singletons around every test."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


# -- pieces --------------------------------------------------------------------------------------------------------


def test_every_option_has_help_and_the_cli_shares_the_parser(capsys):
    import dataclasses

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainingArguments):
        assert f.metadata["help"], f.name
        assert f"--{f.name.replace('_', '-')}" in text
    from bafenet.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    assert "--paper-protocol" in capsys.readouterr().out


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="--train-repeats"):
        TrainingArguments(train_repeats=0)
    with pytest.raises(ValueError, match="--resume and --overwrite-output-dir"):
        TrainingArguments(resume="latest", overwrite_output_dir=True)
    assert TrainingArguments().resolved_learning_rate == 1.0
    assert TrainingArguments(optimizer="adamw").resolved_learning_rate == 1e-4
    assert parse_config_overrides("fpn_channels=32,strides=[4,8,16,32],backbone=resnet50") == {
        "fpn_channels": 32, "strides": [4, 8, 16, 32], "backbone": "resnet50"}


def test_recipe_schedule_warmup_then_epoch_milestones():
    schedule = RecipeSchedule(warmup_steps=500, warmup_factor=1 / 3, milestones=(8, 16), gamma=0.1,
                              updates_per_epoch=1152)
    assert schedule(0) == pytest.approx(1 / 3) and schedule(499) == pytest.approx(1 / 3)
    assert schedule(500) == 1.0 and schedule(8 * 1152 - 1) == 1.0
    assert schedule(8 * 1152) == pytest.approx(0.1) and schedule(16 * 1152) == pytest.approx(0.01)
    # Accelerate steps the scheduler once per process and update: the multiplier follows updates, not calls
    two = RecipeSchedule(500, 1 / 3, (8, 16), 0.1, updates_per_epoch=576, num_processes=2)
    assert two(2 * 499 + 1) == pytest.approx(1 / 3) and two(2 * 500) == 1.0 and two(2 * 8 * 576) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_and_biases(tiny_model_dir):
    from bafenet.models.bafenet import BafeNetForObjectDetection

    model = BafeNetForObjectDetection.from_pretrained(tiny_model_dir)
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert any(n.endswith(".bias") for n in no_decay_names) and not any(n.endswith(".bias") for n in decay_names)
    norm_weights = {f"{m}.weight" for m, mod in model.named_modules()
                    if isinstance(mod, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase))}
    assert norm_weights & no_decay_names and not norm_weights & decay_names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable


def test_epoch_sampler_reshuffles_each_epoch_deterministically():
    sampler = EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and first == list(EpochShuffleSampler(10, seed=3))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(k - 10 for k in second) == list(range(10)) and [k - 10 for k in second] != first


# -- end to end ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bright_dataset_dir(synthetic_dataset_dir, tmp_path_factory) -> Path:
    """3 images of 128x128 with 4 bright 8-12 px targets each (same rows in every split): every batch has positive
    FCOS points at 128 px, which the DDP test needs (see test_two_process_ddp_on_cpu_keeps_replicas_identical)."""
    import datasets

    features = datasets.load_dataset(str(synthetic_dataset_dir), split="test").features
    return _write_overfit_dataset(features, tmp_path_factory.mktemp("bright") / "dataset", num_images=3)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_replicas_identical(bright_dataset_dir, tiny_model_dir, tmp_path):
    # Bright targets: the model's loss all-reduces its centerness normaliser only on processes with positive points,
    # so a process whose batch has none would desynchronise the collectives (reported on the model).
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(SCRIPT),
               *_base_args(bright_dataset_dir, tiny_model_dir, out), "--per-device-train-batch-size", "1",
               "--train-repeats", "2",
               "--max-steps", "2", "--gradient-accumulation-steps", "2", "--max-grad-norm", "10",
               "--checkpointing-steps", "1"]
    result = subprocess.run(command, env=dict(_env(), ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    hashes = metrics["replica_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1], "the two processes hold different weights"
    assert metrics["global_step"] == 2 and metrics["stopped_early"] == "max_steps"
    assert metrics["last"]["test"]["num_images"] == 3  # gathered from both processes, padding dropped
    assert metrics["selected"]["validation"]["num_images"] == 3
    assert [p.name for p in list_checkpoints(out)] == ["step_000001", "step_000002"]
    # the output folder is a complete model folder (safetensors + remote code + processor) + args + metrics
    for name in ("model.safetensors", "config.json", "modeling_bafenet.py", "preprocessor_config.json",
                 "train_args.json", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard log"
    from transformers import AutoModelForObjectDetection

    AutoModelForObjectDetection.from_pretrained(out, trust_remote_code=True)


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_weights(synthetic_dataset_dir, tiny_model_dir, tmp_path, one_thread,
                                                     capsys):
    # 6 training images, batch 2 -> 3 updates per epoch, 2 epochs; default recipe (D-Adapt Adam, flip, BAG-CP)
    def args(out: Path, *extra: str) -> list[str]:
        return [*_base_args(synthetic_dataset_dir, tiny_model_dir, out), "--num-train-epochs", "2",
                "--checkpointing-steps", "2", "--warmup-steps", "2", "--lr-milestones", "1", "--report-to", "none",
                "--max-eval-images", "2", *extra]

    assert main(args(tmp_path / "reference")) == 0

    killed_dir = tmp_path / "killed"
    killed = subprocess.run([sys.executable, str(SCRIPT), *args(killed_dir, "--debug-sigkill-at-step", "5")],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-4000:]
    # killed mid-epoch 2, after the mid-epoch checkpoint at update 4: resuming skips the consumed batch
    assert [p.name for p in list_checkpoints(killed_dir)] == ["step_000002", "step_000003", "step_000004"]
    assert not (killed_dir / "metrics.json").exists()

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    assert main(args(killed_dir, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    expected, actual = _weights(tmp_path / "reference" / "last_model"), _weights(killed_dir / "last_model")
    initial = _weights(tiny_model_dir)
    assert any(not torch.equal(initial[k], expected[k]) for k in expected), "training did not move the weights"
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    reference_metrics = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    resumed_metrics = json.loads((killed_dir / "metrics.json").read_text())
    assert resumed_metrics["validation_history"] == reference_metrics["validation_history"]
    assert resumed_metrics["global_step"] == 6


@pytest.mark.slow  # trains
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    synthetic_dataset_dir, tiny_model_dir, tmp_path, capsys
):
    out = tmp_path / "nan"
    code = main([*_base_args(synthetic_dataset_dir, tiny_model_dir, out), "--checkpointing-steps", "1",
                 "--debug-nan-at-step", "2", "--report-to", "none", "--optimizer", "adamw"])
    assert code == 1
    message = capsys.readouterr().err
    assert "non-finite loss" in message and "update 2" in message and "step_000001" in message
    assert [p.name for p in list_checkpoints(out)] == ["step_000001"]
    assert all(torch.isfinite(t).all() for t in _weights(out / "checkpoints" / "step_000001").values())
    assert not (out / "metrics.json").exists()


def _write_overfit_dataset(features, out: Path, num_images: int, size: int = 128) -> Path:
    """A few 128x128 images with 4 bright 8-12 px targets on the sky each; the same rows in every split."""
    import datasets
    from PIL import Image

    def png(array: np.ndarray) -> dict:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    rng = np.random.default_rng(0)
    rows = []
    for i in range(num_images):
        image = rng.integers(20, 50, size=(size, size)).astype(np.uint8)
        sky, target = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
        horizon = int(size * 0.7)
        sky[:horizon] = 255
        boxes, points = [], []
        while len(boxes) < 4:
            side = int(rng.integers(8, 13))
            x, y = int(rng.integers(4, size - side - 4)), int(rng.integers(4, horizon - side))
            if target[max(y - 4, 0) : y + side + 4, max(x - 4, 0) : x + side + 4].any():
                continue
            target[y : y + side, x : x + side] = 255
            image[y : y + side, x : x + side] = 220
            boxes.append([float(x), float(y), float(side), float(side)])
            points.append([x + side // 2, y + side // 2])
        rows.append({"image": png(image), "image_id": i, "image_name": f"overfit_{i}", "width": size, "height": size,
                     "objects": {"bbox": boxes, "category": [0] * 4, "area": [b[2] * b[3] for b in boxes],
                                 "id": list(range(4 * i, 4 * i + 4))},
                     "points": points, "target_mask": png(target), "sky_mask": png(sky)})
    data = datasets.Dataset.from_list(rows, features=features)
    (out / "data").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        data.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return out


@pytest.mark.slow
def test_small_model_overfits_a_few_synthetic_images(bright_dataset_dir, tmp_path):
    dataset, out = bright_dataset_dir, tmp_path / "run"
    # 2 images x10 per epoch = 10 updates/epoch, AdamW 1e-3, no BAG-CP; the validation split holds the same images,
    # so the selected model (the one written to the output folder) is the best-fitting of the 8 epochs (mAP07 1.0
    # from epoch 7 on; 0.93 at epoch 5)
    code = main(["--dataset", str(dataset), "--output-dir", str(out), "--image-size", "128",
                 "--config-overrides", "fpn_channels=32,num_head_convs=1,adapter_channels=16",
                 "--processor-overrides", "max_detections=90", "--num-train-epochs", "8", "--train-repeats", "10", "--optimizer", "adamw", "--learning-rate", "1e-3",
                 "--warmup-steps", "0", "--lr-milestones", "--copy-paste-probability", "0",
                 "--checkpointing-steps", "0", "--dataloader-num-workers", "0", "--report-to", "none",
                 "--max-train-images", "2", "--max-eval-images", "2"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = [(h["epoch"], round(h["validation"]["mAP07"], 3)) for h in metrics["validation_history"]]
    assert metrics["selected"]["test"]["mAP07"] >= 0.9, history
    assert metrics["last"]["test"]["recall"] == 1.0, history
    # no --backbone-weights: the backbone's BatchNorm was trained, not frozen at mean 0 / variance 1
    assert json.loads((out / "config.json").read_text())["freeze_backbone_bn"] is False
    # each setting saved by its owner: post-processing in preprocessor_config.json, not in config.json
    assert json.loads((out / "preprocessor_config.json").read_text())["max_detections"] == 90
    assert "max_detections" not in json.loads((out / "config.json").read_text())
    # the operating point: the selected model's best-F1 score on validation, stored in config.json, is the pipeline's
    # default threshold, which returns this trained model's detections (transformers' 0.5 would drop most of them)
    config = json.loads((out / "config.json").read_text())
    assert config["operating_threshold"] == metrics["operating_threshold"]
    assert config["operating_threshold"] == pytest.approx(metrics["selected"]["validation"]["best_f1_score"])
    import datasets
    from transformers import pipeline

    image = datasets.load_dataset(str(dataset), split="test")[0]["image"]
    detector = pipeline("object-detection", model=str(out), trust_remote_code=True)
    detections = detector(image)
    assert detections and min(d["score"] for d in detections) >= config["operating_threshold"]
    assert all(isinstance(v, int) for d in detections for v in d["box"].values())  # the pipeline rounds boxes


def test_the_debug_options_are_one_fault_injection_callback():
    from bafenet.training import FaultInjection

    assert FaultInjection.from_arguments(TrainingArguments()) == []  # no option, no callback
    [fault] = FaultInjection.from_arguments(TrainingArguments(debug_nan_at_step=3, debug_sigkill_at_step=5))
    assert (fault.nan_at, fault.explode_at, fault.sigkill_at) == (3, None, 5)
