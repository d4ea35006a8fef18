"""The loop's position saved in every checkpoint, the settings a resumed run must share, and the checkpoint folders."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "step_"
# Settings a resumed run must share with its checkpoint (they fix the data order and the optimiser's state layout);
# the other optimisation settings (learning rate, weight decay, warm-up, milestones, gamma, clipping) may change on
# --resume and are applied from the resumed update on.
RESUME_FIXED = ("optimizer", "per_device_train_batch_size", "gradient_accumulation_steps", "train_repeats",
                "max_train_images", "seed", "paper_protocol", "train_split", "config_overrides", "processor_overrides")
RESUME_CHANGEABLE = ("learning_rate", "weight_decay", "warmup_steps", "warmup_factor", "lr_milestones", "lr_gamma",
                     "lr_schedule", "lr_min_factor", "max_grad_norm")


@dataclass
class TrainerState:
    """Loop position and selection history, saved in every checkpoint (``trainer_state.json``)."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches this process consumed in the current epoch
    global_step: int = 0  # optimizer updates
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    history: list = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved `state_dict`; an unknown key or a value of the wrong type or range is a ValueError naming
        the key (`check_state`)."""
        for key, value in check_state(state).items():
            setattr(self, key, value)


MAX_COUNT = 10**12  # no real run reaches this many epochs, batches or updates
_COUNTS = ("epoch", "batch_in_epoch", "global_step")
_OPTIONAL_COUNTS = ("best_epoch", "best_step")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_state(state: Any) -> dict[str, Any]:
    """``state`` (a ``trainer_state.json`` record) checked against `TrainerState`'s fields; returns it."""
    if not isinstance(state, dict):
        raise ValueError(f"state must be a JSON object, got {type(state).__name__}")
    names = [f.name for f in fields(TrainerState)]
    for key, value in state.items():
        if key not in names:
            raise ValueError(f"unknown state key {key!r} (known: {', '.join(names)})")
        ok = (_is_count(value) if key in _COUNTS else value is None or _is_count(value) if key in _OPTIONAL_COUNTS
              else _is_number(value) and value >= 0 if key == "train_seconds"
              else value is None or _is_number(value) if key == "best_metric" else isinstance(value, list))
        if not ok:
            raise ValueError(f"state {key!r} has an impossible value {str(value)[:40]!r}")
    return state


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (``checkpoints/step_XXXXXX``), oldest first. Unfinished ``.tmp`` folders are skipped."""
    folder = output_dir / "checkpoints"
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
