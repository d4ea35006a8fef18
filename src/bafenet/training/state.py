"""The loop's position saved in every checkpoint, the settings a resumed run must share, and the checkpoint folders."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "step_"
# Settings a resumed run must share with its checkpoint (they fix the data order and the optimiser's state layout);
# the other optimisation settings (learning rate, weight decay, warm-up, milestones, gamma, clipping) may change on
# --resume and are applied from the resumed update on.
RESUME_FIXED = ("optimizer", "per_device_train_batch_size", "gradient_accumulation_steps", "train_repeats",
                "max_train_images", "seed", "paper_protocol", "train_split", "config_overrides", "processor_overrides")
RESUME_CHANGEABLE = ("learning_rate", "weight_decay", "warmup_steps", "warmup_factor", "lr_milestones", "lr_gamma",
                     "max_grad_norm")


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
        for key, value in state.items():
            setattr(self, key, value)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (``checkpoints/step_XXXXXX``), oldest first. Unfinished ``.tmp`` folders are skipped."""
    folder = output_dir / "checkpoints"
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
