"""Training checkpoints that cannot execute code: JSON, safetensors and tensor-only ``torch.save`` files.

``Accelerator.save_state`` pickles registered objects (``custom_checkpoint_0.pkl``) and RNG states
(``random_states_0.pkl``), and ``load_state`` unpickles them: a crafted checkpoint folder would run code on
``--resume``. This module writes instead::

    step_XXXXXX/
      trainer_state.json     loop position, selection history and the settings that shaped the optimiser (JSON)
      model.safetensors      weights (safetensors)
      optimizer.pt           optimizer.state_dict(): tensors, numbers, lists and dicts only
      scheduler.pt           scheduler.state_dict(), same
      scaler.pt              the fp16 GradScaler's state (when there is one)
      rng_state_<i>.pt       process i's python / numpy / torch / CUDA RNG states as tensors and numbers

and reads the ``.pt`` files with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. Any other file (a ``.pkl``) is never opened. `read_checkpoint` reads and checks every file before
anything is applied, so a corrupt checkpoint is refused whole with one line naming the file.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .outputs import UserError

__all__ = ["CheckpointError", "Checkpoint", "REQUIRED_FILES", "save_checkpoint", "read_checkpoint",
           "apply_checkpoint", "weights_are_finite"]

FORMAT = "bafenet-checkpoint/1"
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
REQUIRED_FILES = (STATE_FILE, MODEL_FILE, "optimizer.pt", "scheduler.pt")


class CheckpointError(UserError):
    """A checkpoint folder is incomplete, corrupt or not ours; the message names the file."""


@dataclass
class Checkpoint:
    """Everything read from a checkpoint folder, checked, on the CPU."""

    folder: Path
    state: dict[str, Any]  # TrainerState fields
    settings: dict[str, Any]  # the training settings recorded at save time
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any] | None


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (no numpy arrays, no pickled objects)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, accelerator: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], settings: dict[str, Any]) -> None:
    """Write a checkpoint into the existing folder ``folder`` (every process calls it; the main one writes the shared
    files, each process its RNG state)."""
    from safetensors.torch import save_model

    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), folder / "scaler.pt")
        record = {"format": FORMAT, "num_processes": accelerator.num_processes, "state": state, "settings": settings}
        (folder / STATE_FILE).write_text(json.dumps(record, indent=1) + "\n")
    torch.save(_rng_state(), folder / f"rng_state_{accelerator.process_index}.pt")


def _load_tensors(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for anything but tensors and plain containers, EOF, zip errors
        raise CheckpointError(f"{path}: unreadable or not a tensor-only file ({' '.join(str(error).split())[:200]}); "
                              "use another checkpoint") from None


def read_checkpoint(folder: str | Path, process_index: int = 0) -> Checkpoint:
    """Read and check every file of a checkpoint folder; raises `CheckpointError` naming the first bad file."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing, so {folder} is not a checkpoint of `bafenet train` "
                                  "(accelerate save_state folders are not read: they hold pickles)")
    try:
        record = json.loads((folder / STATE_FILE).read_text())
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        from .training.state import check_state

        state, settings = check_state(record["state"]), dict(record["settings"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder / STATE_FILE}: unreadable ({error}); use another checkpoint") from None
    try:
        weights = load_file(str(folder / MODEL_FILE))
    except Exception as error:  # SafetensorError is no OSError
        raise CheckpointError(f"{folder / MODEL_FILE}: corrupt ({' '.join(str(error).split())}); use another "
                              "checkpoint") from None
    scaler = _load_tensors(folder / "scaler.pt") if (folder / "scaler.pt").is_file() else None
    rng_path = folder / f"rng_state_{process_index}.pt"
    return Checkpoint(folder, state, settings, weights, _load_tensors(folder / "optimizer.pt"),
                      _load_tensors(folder / "scheduler.pt"), scaler,
                      _load_tensors(rng_path) if rng_path.is_file() else None)


def apply_checkpoint(checkpoint: Checkpoint, accelerator: Any, model: torch.nn.Module, optimizer: Any,
                     scheduler: Any) -> None:
    """Load a `read_checkpoint` result into the prepared model, optimizer, scheduler, scaler and RNGs."""
    unwrapped = accelerator.unwrap_model(model)
    missing, unexpected = unwrapped.load_state_dict(checkpoint.weights, strict=False)
    shared = {name for name, _ in unwrapped.named_parameters(remove_duplicate=False)} - set(
        dict(unwrapped.named_parameters()))  # tied copies safetensors stores once
    if unexpected or set(missing) - shared:
        raise CheckpointError(f"{checkpoint.folder / MODEL_FILE}: weights do not fit the model (missing "
                              f"{sorted(set(missing) - shared)[:3]}, unexpected {sorted(unexpected)[:3]}); resume "
                              "with the model options of that run")
    try:
        optimizer.load_state_dict(checkpoint.optimizer)
        scheduler.load_state_dict(checkpoint.scheduler)
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint.folder}: optimizer or scheduler state does not fit this run ({error})") \
            from None
    if checkpoint.scaler is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(checkpoint.scaler)
    if checkpoint.rng is not None:
        _set_rng_state(checkpoint.rng)


def weights_are_finite(folder: str | Path) -> bool:
    """Whether the checkpoint's ``model.safetensors`` reads and holds only finite numbers."""
    from safetensors.torch import load_file

    try:
        weights = load_file(str(Path(folder) / MODEL_FILE))
    except Exception:
        return False
    return all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())
