"""The optimiser (D-Adaptation Adam or AdamW, no decay on norms and biases) and the paper's learning-rate schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .arguments import TrainingArguments


@dataclass
class RecipeSchedule:
    """LR multiplier of the paper: ``warmup_factor`` for the first ``warmup_steps`` updates (ConstantLR), then
    ``gamma`` per passed epoch milestone (MultiStepLR). Called by LambdaLR with its step count, which Accelerate
    advances ``num_processes`` times per update (``AcceleratedScheduler``), hence the division."""

    warmup_steps: int
    warmup_factor: float
    milestones: tuple[int, ...]
    gamma: float
    updates_per_epoch: int
    num_processes: int = 1

    def __call__(self, scheduler_step: int) -> float:
        update = scheduler_step // self.num_processes
        epoch = update // self.updates_per_epoch
        factor = self.warmup_factor if update < self.warmup_steps else 1.0
        return factor * self.gamma ** sum(epoch >= m for m in self.milestones)


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


def build_optimizer(args: TrainingArguments, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = [g for g in parameter_groups(model, args.weight_decay) if g["params"]]
    if args.optimizer == "dadapt_adam":
        from dadaptation import DAdaptAdam

        return DAdaptAdam(groups, lr=args.resolved_learning_rate, decouple=True)
    return torch.optim.AdamW(groups, lr=args.resolved_learning_rate)
