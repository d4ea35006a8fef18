"""Hooks into the training loop (`TrainerCallback`) and the one callback bafenet ships: `FaultInjection`, the three
``--debug-*`` testing options (kill the process, a NaN loss, infinite weights at a chosen update), which the tests use
to check resume and the NaN stop. Nothing here runs unless one of those options is given."""

from __future__ import annotations

import os
import signal
from typing import Any

import torch

from .arguments import BafeNetTrainingArguments

__all__ = ["TrainerCallback", "FaultInjection"]


class TrainerCallback:
    """Called by `BafeNetTrainer` (the ``trainer`` argument) at three points of every batch; each method does nothing
    by default."""

    def on_loss(self, trainer: Any, loss: torch.Tensor) -> torch.Tensor:
        """The batch's loss before the finiteness check and the backward pass; returns the loss to use."""
        return loss

    def on_optimizer_step(self, trainer: Any) -> None:
        """After the optimiser and scheduler steps (and ``zero_grad``), before the update is counted."""

    def on_update_end(self, trainer: Any) -> None:
        """After an update is counted (``trainer.state.global_step``) and its checkpoint, if any, is written."""


class FaultInjection(TrainerCallback):
    """``--debug-nan-at-step N``: the loss of update N is NaN; ``--debug-explode-at-step N``: every weight is
    infinite right after update N; ``--debug-sigkill-at-step N``: SIGKILL right after update N (and its checkpoint)."""

    def __init__(self, nan_at: int | None = None, explode_at: int | None = None, sigkill_at: int | None = None):
        self.nan_at, self.explode_at, self.sigkill_at = nan_at, explode_at, sigkill_at

    @classmethod
    def from_arguments(cls, args: BafeNetTrainingArguments) -> list[FaultInjection]:
        """The callback of the ``--debug-*`` options given, as a list: empty when none is."""
        faults = (args.debug_nan_at_step, args.debug_explode_at_step, args.debug_sigkill_at_step)
        return [] if faults == (None, None, None) else [cls(*faults)]

    def on_loss(self, trainer: Any, loss: torch.Tensor) -> torch.Tensor:
        if trainer.state.global_step + 1 == self.nan_at:
            return loss * float("nan")
        return loss

    def on_optimizer_step(self, trainer: Any) -> None:
        if trainer.accelerator.sync_gradients and trainer.state.global_step + 1 == self.explode_at:
            with torch.no_grad():
                for param in trainer.model.parameters():
                    param.fill_(float("inf"))

    def on_update_end(self, trainer: Any) -> None:
        if trainer.state.global_step == self.sigkill_at:
            os.kill(os.getpid(), signal.SIGKILL)
