"""Issue 13: checkpoints that cannot execute code, checked before use, with a fallback; --resume settings; NaN stop."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bafenet.checkpoints import REQUIRED_FILES
from bafenet.commands.train import main
from bafenet.training import list_checkpoints

pytestmark = pytest.mark.slow  # every test trains a tiny model first (several seconds)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _reset() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _args(dataset: Path, model: Path, out: Path, *extra: str) -> list[str]:
    # 6 training images, batch 2: 3 updates per epoch, a checkpoint after each
    return ["--dataset", str(dataset), "--model-name-or-path", str(model), "--output-dir", str(out),
            "--dataloader-num-workers", "0", "--train-repeats", "1", "--per-device-eval-batch-size", "2",
            "--max-eval-images", "2", "--test-split", "", "--report-to", "none", "--optimizer", "adamw",
            "--checkpointing-steps", "1", "--num-train-epochs", "1", "--save-total-limit", "3", *extra]


class Payload:
    """Unpickling this creates ``path``: the proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def one_epoch_run(synthetic_dataset_dir, tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, out)) == 0
    _reset()
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return shutil.copytree(run, tmp_path / "run")


def test_checkpoints_hold_no_pickles_and_crafted_ones_never_run(one_epoch_run, synthetic_dataset_dir, tiny_model_dir,
                                                                tmp_path, capsys):
    latest = list_checkpoints(one_epoch_run)[-1]
    assert {p.name for p in latest.iterdir()} >= set(REQUIRED_FILES)
    assert not list(latest.glob("*.pkl")) and not list(latest.glob("*.bin"))
    run = _copy(one_epoch_run, tmp_path)
    proof = tmp_path / "pwned"
    for folder in list_checkpoints(run):  # what accelerate's load_state would unpickle
        for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
            (folder / name).write_bytes(pickle.dumps(Payload(proof)))
    # a crafted pickle in a file we do read: torch.load(weights_only=True) refuses it, --resume falls back
    torch.save({"state": {}, "param_groups": [], "x": Payload(proof)}, list_checkpoints(run)[-1] / "optimizer.pt")
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume", "--num-train-epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "skipping step_000003" in out and "optimizer.pt" in out
    assert f"resumed from {run / 'checkpoints' / 'step_000002'}" in out
    assert not proof.exists()
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 6


def test_a_foreign_or_corrupt_checkpoint_is_refused_in_one_line(one_epoch_run, synthetic_dataset_dir, tiny_model_dir,
                                                                 tmp_path, capsys):
    run = _copy(one_epoch_run, tmp_path)
    foreign = tmp_path / "accelerate_state"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"")
    (foreign / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(tmp_path / "pwned")))
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume", str(foreign))) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{foreign / 'trainer_state.json'}: missing" in err
    for folder in list_checkpoints(run):  # every checkpoint corrupt: one line, nothing trained
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    _reset()
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no usable checkpoint" in err and "model.safetensors: corrupt" in err
    assert not (tmp_path / "pwned").exists()


def test_resume_applies_a_new_learning_rate_and_refuses_a_new_optimizer(one_epoch_run, synthetic_dataset_dir,
                                                                         tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    run = _copy(one_epoch_run, tmp_path)
    checkpoint = load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume", "--optimizer", "dadapt_adam")) == 1
    assert "--optimizer dadapt_adam differs from the checkpoint's adamw" in capsys.readouterr().err
    _reset()
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume", "--processor-overrides",
                      "normalization=imagenet")) == 1  # the model's inputs are fixed by the checkpoint too
    assert "--processor-overrides normalization=imagenet differs from the checkpoint's None" in capsys.readouterr().err
    _reset()
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume", "--num-train-epochs", "2",
                      "--learning-rate", "1e-9", "--weight-decay", "0")) == 0
    assert "applying --learning-rate 1e-09 (was 0.0001)" in capsys.readouterr().out
    assert json.loads((run / "train_args.json").read_text())["learning_rate"] == 1e-9
    # three more AdamW updates at lr 1e-9 move no weight by more than ~3e-9 (at 1e-4 they move by ~3e-4)
    last = load_file(str(run / "last_model" / "model.safetensors"))
    moved = max(float((last[k].float() - checkpoint[k].float()).abs().max()) for k in checkpoint
                if checkpoint[k].is_floating_point() and "running" not in k)
    assert moved < 1e-6
    # a new schedule is applied too (the restored scheduler must not bring the checkpoint's back): past the new
    # milestone the lr is 1e-4 x 1e-5
    run = _copy(one_epoch_run, tmp_path / "schedule")
    _reset()
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--resume", "--num-train-epochs", "2",
                      "--lr-milestones", "1", "--lr-gamma", "1e-5")) == 0
    assert "--lr-gamma 1e-05 (was" in capsys.readouterr().out
    last = load_file(str(run / "last_model" / "model.safetensors"))
    moved = max(float((last[k].float() - checkpoint[k].float()).abs().max()) for k in checkpoint
                if checkpoint[k].is_floating_point() and "running" not in k)
    assert moved < 1e-6


def test_nan_stop_names_a_finite_checkpoint_before_the_destructive_update(synthetic_dataset_dir, tiny_model_dir,
                                                                          tmp_path, capsys):
    out = tmp_path / "explode"
    # update 2 makes every weight infinite (like a D-Adapt step that blew up): its checkpoint is not named
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, out, "--debug-explode-at-step", "2")) == 1
    message = capsys.readouterr().err
    assert "non-finite loss" in message and "update 3" in message
    assert f"finite weights: {out / 'checkpoints' / 'step_000001'}" in message
    assert "step_000002 skipped: non-finite weights" in message and "--learning-rate" in message


def test_overwrite_output_dir_deletes_only_the_trainers_checkpoints(one_epoch_run, synthetic_dataset_dir,
                                                                    tiny_model_dir, tmp_path):
    run = _copy(one_epoch_run, tmp_path)
    before = [p.name for p in list_checkpoints(run)]
    (run / "checkpoints" / "my_notes.txt").write_text("kept")  # a user's file beside the checkpoints
    (run / "checkpoints" / f"{before[0]}.tmp").mkdir()  # an interrupted save of ours
    assert main(_args(synthetic_dataset_dir, tiny_model_dir, run, "--max-steps", "1", "--overwrite-output-dir")) == 0
    assert (run / "checkpoints" / "my_notes.txt").read_text() == "kept"
    assert [p.name for p in list_checkpoints(run)] == ["step_000001"]
    assert not (run / "checkpoints" / f"{before[0]}.tmp").exists()


@pytest.mark.parametrize("change, needle", [
    ({"epoch": "zero"}, "'epoch' has an impossible value 'zero'"),
    ({"global_step": 1e30}, "'global_step' has an impossible value"),
    ({"global_step": 10**400}, "'global_step' has an impossible value"),
    ({"__class__": 1}, "unknown state key '__class__'"),
])
def test_a_trainer_state_of_wrong_type_unknown_key_or_impossible_count_is_refused(one_epoch_run, tmp_path, change,
                                                                                   needle):
    from bafenet.checkpoints import CheckpointError, read_checkpoint

    folder = list_checkpoints(_copy(one_epoch_run, tmp_path))[-1]
    record = json.loads((folder / "trainer_state.json").read_text())
    record["state"].update(change)
    (folder / "trainer_state.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="trainer_state.json: unreadable") as error:
        read_checkpoint(folder)
    assert needle in str(error.value) and "\n" not in str(error.value)
