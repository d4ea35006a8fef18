"""Training options: five typed groups parsed with `transformers.HfArgumentParser`; `--recipe` defaults that explicit
options win over; `--resume` with an optional value; booleans with `--no-...`; tuples; snake and kebab flags."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bafenet.training import (
    ARGUMENT_GROUPS,
    RECIPES,
    DataArguments,
    ModelArguments,
    RunArguments,
    BafeNetTrainingArguments,
    TrainingArguments,
    arguments_from_namespace,
    build_parser,
    command_line,
)


def _parse(argv: list[str]) -> BafeNetTrainingArguments:
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
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(BafeNetTrainingArguments))
    assert len(set(names)) == len(names)
    args = BafeNetTrainingArguments.from_groups(ModelArguments(backbone="resnet50"), DataArguments(train_repeats=1),
                                         RunArguments(output_dir="runs/y"))
    assert (args.backbone, args.train_repeats, args.output_dir, args.seed) == ("resnet50", 1, "runs/y", 42)
    assert BafeNetTrainingArguments.from_groups(*args.groups()) == args


def test_explicit_options_win_over_the_recipe_even_at_their_default():
    recipe = RECIPES["cpu"]
    args = _parse(["--recipe", "cpu", "--dataloader-num-workers", "2", "--optimizer", "dadapt_adam"])
    assert args.backbone == recipe["backbone"] and args.image_size == recipe["image_size"]
    assert args.dataloader_num_workers == 2 and args.optimizer == "dadapt_adam"  # both equal the dataclass default
    merged = _parse(["--recipe", "cpu", "--config-overrides", "fpn_channels=32"])
    assert "fpn_channels=32" in merged.config_overrides and "input_mode=zoom" in merged.config_overrides
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
    args = BafeNetTrainingArguments(output_dir="runs/z", paper_protocol=True, lr_milestones=(4,), learning_rate=0.01,
                             test_split="", copy_paste_gain=(0.2, 0.3))
    assert _parse(command_line(args)) == args
    assert command_line(BafeNetTrainingArguments()) == []


def test_the_namespace_holds_only_the_options_given_and_the_help_shows_every_default():
    namespace = build_parser().parse_args(["--output-dir", "runs/x", "--score-threshold", "0.2", "--no-paper-protocol"])
    assert vars(namespace) == {"output_dir": "runs/x", "detection_threshold": 0.2, "paper_protocol": False}
    text = build_parser().format_help()
    for shown in ("(default: 512)", "(default: False)", "(default: (8, 16))", "(default: None)"):
        assert shown in text


def test_bad_values_end_in_argparse_messages(capsys):
    for argv, message in ((["--optimizer", "sgd"], "invalid choice: 'sgd' (choose from 'dadapt_adam', 'adamw')"),
                          (["--paper-protocol", "maybe"], "Truthy value expected: got maybe"),
                          (["--image-size", "big"], "invalid int value: 'big'"),
                          (["--recipe", "gpu"], "invalid choice: 'gpu' (choose from 'cpu', 'cpu-tiles', 'cpu-zoom')")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert message in capsys.readouterr().err
    assert _parse(["--paper-protocol", "false", "--mixed-precision", "bf16"]).mixed_precision == "bf16"
    with pytest.raises(ValueError, match="--image-size must be >= 1"):
        _parse(["--image-size", "0"])


def test_the_parser_uses_no_private_argparse_or_hf_argument_parser_api():
    import inspect
    import re

    from bafenet.training import arguments

    source = inspect.getsource(arguments)
    assert "__class__" not in source and "_parse_dataclass_field" not in source
    assert not re.search(r"\b(argparse|parser|HfArgumentParser)\._[a-zA-Z]", source)


def test_override_values_are_checked_against_the_resolved_types():
    from bafenet.training.arguments import _accepted_types

    assert _accepted_types(list[int] | tuple[int, ...]) == (list, tuple)
    assert _accepted_types(float | None) == (int, float)
    assert _accepted_types(dict[str, int] | None) == (dict,) and _accepted_types(Any) is None
    args = BafeNetTrainingArguments(processor_overrides="image_mean=[0.5,0.5,0.5],image_std=[0.2,0.2,0.2]",
                             config_overrides="strides=[8,16,32],backbone_out_indices=[2,3,4]")
    assert "image_mean=[0.5,0.5,0.5]" in args.processor_overrides  # a sequence, once refused as "a int or float"
    with pytest.raises(ValueError, match="strides=8 must be a list or tuple"):
        BafeNetTrainingArguments(config_overrides="strides=8")


def test_training_arguments_is_the_deprecated_alias_of_bafenet_training_arguments():
    from bafenet.training import arguments

    assert TrainingArguments is BafeNetTrainingArguments is arguments.TrainingArguments  # transformers' name, kept
