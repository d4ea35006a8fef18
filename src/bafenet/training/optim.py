"""The optimiser (D-Adaptation Adam or AdamW, no decay on norms and biases) and the learning-rate schedule (the
paper's steps, or a cosine decay over the run)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .arguments import BafeNetTrainingArguments


@dataclass
class RecipeSchedule:
    """LR multiplier: ``warmup_factor`` for the first ``warmup_steps`` updates (ConstantLR), then either the paper's
    ``gamma`` per passed epoch milestone (MultiStepLR, ``cosine=False``) or a cosine decay from 1 to ``min_factor``
    over the run. The run's progress is the larger of the updates done out of ``total_updates`` and
    ``time_fraction`` (training time out of ``--max-train-minutes``, set by the trainer before each step), so the
    decay ends when the first of the two limits is reached. Called by LambdaLR with its step count, which Accelerate
    advances ``num_processes`` times per update (``AcceleratedScheduler``), hence the division."""

    warmup_steps: int
    warmup_factor: float
    milestones: tuple[int, ...]
    gamma: float
    updates_per_epoch: int
    num_processes: int = 1
    cosine: bool = False
    min_factor: float = 0.01
    total_updates: int = 0
    time_fraction: float = 0.0

    def __call__(self, scheduler_step: int) -> float:
        update = scheduler_step // self.num_processes
        if update < self.warmup_steps:
            factor = self.warmup_factor
        elif self.cosine:
            progress = max(self.time_fraction, update / max(self.total_updates, 1))
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        else:
            factor = 1.0
        return factor * self.gamma ** sum(update // self.updates_per_epoch >= m for m in self.milestones)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed and not decayed (norm layers and biases, as ``norm_decay_mult=0,
    bias_decay_mult=0``). Shared parameters are listed once."""
    norm_types = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if isinstance(module, norm_types) or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(args: BafeNetTrainingArguments, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = [g for g in parameter_groups(model, args.weight_decay) if g["params"]]
    if args.optimizer == "dadapt_adam":
        from dadaptation import DAdaptAdam

        return DAdaptAdam(groups, lr=args.resolved_learning_rate, decouple=True)
    return torch.optim.AdamW(groups, lr=args.resolved_learning_rate)
