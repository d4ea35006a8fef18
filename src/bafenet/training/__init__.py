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
(`bafenet.checkpoints`: JSON, safetensors, tensor-only files read with ``weights_only=True``). The data order and
every augmentation are pure functions of (seed, epoch, position), so a run killed with SIGKILL and resumed with
``--resume`` reaches the same weights as an uninterrupted one.

One file per job: ``arguments.py`` (the option groups, RECIPES, the HfArgumentParser command line), ``data.py``
(sampler, datasets, collators, ground truths), ``optim.py`` (optimiser and schedule), ``probe.py`` (the DDP gradient
probe), ``state.py`` (loop state, checkpoint folders, resume rules), ``faults.py`` (`TrainerCallback`, the
``--debug-*`` fault injection), ``loop.py`` (`BafeNetTrainer`, `train`); ``bafenet train`` and ``train_accelerate.py``
are `bafenet.commands.train`.
"""

from .arguments import (
    ARGUMENT_GROUPS,
    RECIPES,
    AugmentationArguments,
    BafeNetTrainingArguments,
    DataArguments,
    ModelArguments,
    OptimizationArguments,
    RunArguments,
    TrainingArguments,
    add_arguments,
    arguments_from_namespace,
    build_parser,
    check_config_overrides,
    command_line,
    parse_config_overrides,
)
from .data import AugmentedTrainDataset, EpochShuffleSampler, ground_truths
from .faults import FaultInjection, TrainerCallback
from .loop import COMMAND, BafeNetTrainer, NonFiniteLossError, Trainer, train
from .optim import RecipeSchedule, build_optimizer, parameter_groups
from .probe import parameters_without_gradient
from .state import CHECKPOINT_PREFIX, RESUME_CHANGEABLE, RESUME_FIXED, TrainerState, list_checkpoints

__all__ = [
    "ARGUMENT_GROUPS", "RECIPES", "AugmentationArguments", "BafeNetTrainingArguments", "DataArguments",
    "ModelArguments", "OptimizationArguments", "RunArguments", "TrainingArguments", "add_arguments",
    "arguments_from_namespace", "build_parser", "check_config_overrides", "command_line", "parse_config_overrides",
    "AugmentedTrainDataset",
    "EpochShuffleSampler", "ground_truths", "COMMAND", "BafeNetTrainer", "NonFiniteLossError", "Trainer",
    "TrainerCallback", "FaultInjection",
    "train", "RecipeSchedule", "build_optimizer", "parameter_groups", "parameters_without_gradient",
    "CHECKPOINT_PREFIX", "RESUME_CHANGEABLE", "RESUME_FIXED", "TrainerState", "list_checkpoints",
]
