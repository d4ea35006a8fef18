"""Training options: five typed groups parsed with `transformers.HfArgumentParser`; `--recipe` defaults that explicit
options win over; `--resume` with an optional value; booleans with `--no-...`; tuples; snake and kebab flags."""

from __future__ import annotations

import dataclasses

import pytest

from bafenet.training import (
    ARGUMENT_GROUPS,
    RECIPES,
    DataArguments,
    ModelArguments,
    RunArguments,
    TrainingArguments,
    arguments_from_namespace,
    build_parser,
    command_line,
)


def _parse(argv: list[str]) -> TrainingArguments:
    return arguments_from_namespace(build_parser().parse_args(argv))


def test_parser_is_an_hf_argument_parser_and_takes_snake_and_kebab_flags():
    from transformers import HfArgumentParser

    assert isinstance(build_parser(), HfArgumentParser)
    for flag in ("--output-dir", "--output_dir"):
        assert _parse([flag, "runs/x"]).output_dir == "runs/x"
    assert _parse(["--per_device_train_batch_size", "3", "--learning-rate", "0.5"]).per_device_train_batch_size == 3
    from bafenet.cli import _build_parser  # `bafenet train` adds the same options to its sub-command parser

    namespace = _build_parser(("train",)).parse_args(["train", "--output_dir", "runs/c", "--recipe", "cpu"])
    assert arguments_from_namespace(namespace).output_dir == "runs/c"


def test_groups_hold_every_option_once_and_rebuild_the_flat_arguments():
    names = [f.name for group in ARGUMENT_GROUPS for f in dataclasses.fields(group)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(TrainingArguments)) and len(set(names)) == len(names)
    args = TrainingArguments.from_groups(ModelArguments(backbone="resnet50"), DataArguments(train_repeats=1),
                                         RunArguments(output_dir="runs/y"))
    assert (args.backbone, args.train_repeats, args.output_dir, args.seed) == ("resnet50", 1, "runs/y", 42)
    assert TrainingArguments.from_groups(*args.groups()) == args


def test_explicit_options_win_over_the_recipe_even_at_their_default():
    recipe = RECIPES["cpu"]
    args = _parse(["--recipe", "cpu", "--dataloader-num-workers", "2", "--optimizer", "dadapt_adam"])
    assert args.backbone == recipe["backbone"] and args.image_size == recipe["image_size"]
    assert args.dataloader_num_workers == 2 and args.optimizer == "dadapt_adam"  # both equal the dataclass default
    merged = _parse(["--recipe", "cpu", "--config-overrides", "fpn_channels=32"])
    assert "fpn_channels=32" in merged.config_overrides and "input_mode=tiles" in merged.config_overrides
    assert _parse([]).recipe is None and _parse([]).backbone == "resnet18"


def test_resume_booleans_and_tuples():
    assert _parse([]).resume is None
    assert _parse(["--resume"]).resume == "latest"
    assert _parse(["--resume", "runs/x/checkpoints/step_000002"]).resume == "runs/x/checkpoints/step_000002"
    assert _parse(["--paper-protocol"]).paper_protocol is True
    assert _parse(["--paper-protocol", "--no-paper-protocol"]).paper_protocol is False
    assert _parse(["--recipe", "cpu", "--no-eval-before-training"]).eval_before_training is False
    args = _parse(["--copy-paste-sigma", "0.1", "0.2", "--lr-milestones", "3", "5", "7"])
    assert args.copy_paste_sigma == (0.1, 0.2) and args.lr_milestones == (3, 5, 7)
    assert _parse(["--lr-milestones"]).lr_milestones == ()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--copy-paste-sigma", "0.1"])  # two values


def test_command_line_rebuilds_the_arguments():
    args = TrainingArguments(output_dir="runs/z", paper_protocol=True, lr_milestones=(4,), learning_rate=0.01,
                             test_split="", copy_paste_gain=(0.2, 0.3))
    assert _parse(command_line(args)) == args
    assert command_line(TrainingArguments()) == []
