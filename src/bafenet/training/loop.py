"""The training loop: `BafeNetTrainer` (set-up, resume, the epoch loop with validation and selection, checkpoints,
the final test and ``metrics.json``) and `train`, which runs it under the output folder's lock."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bafenet.data.transforms import BagCopyPaste, DetectionCollator, TileTransform, TrainTransform
from bafenet.inference import inference_loader

from .arguments import BafeNetTrainingArguments, parse_config_overrides
from .data import AugmentedTrainDataset, EpochShuffleSampler, ground_truths
from .faults import FaultInjection, TrainerCallback
from .optim import RecipeSchedule, build_optimizer
from .probe import parameters_without_gradient
from .state import CHECKPOINT_PREFIX, RESUME_CHANGEABLE, RESUME_FIXED, TrainerState, list_checkpoints

COMMAND = "train"


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss; the message names the last good checkpoint."""


def _local_inputs(args: BafeNetTrainingArguments) -> list[Path]:
    """The local folders the run reads (its output folder must not be one of them or hold one)."""
    paths = [Path(p).expanduser() for p in (args.dataset, args.model_name_or_path, args.backbone_weights) if p]
    return [p for p in paths if p.exists()]


class BafeNetTrainer:
    """One training run. ``BafeNetTrainer(args).train()`` returns the metrics written to ``metrics.json``.

    ``callbacks``: `TrainerCallback` objects called at every batch (after the `FaultInjection` of the ``--debug-*``
    options, when one is given)."""

    def __init__(self, args: BafeNetTrainingArguments, callbacks: list[TrainerCallback] | None = None) -> None:
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration
        from accelerate.utils import parse_flag_from_env, set_seed

        self.args = args
        self.callbacks = [*FaultInjection.from_arguments(args), *(callbacks or [])]
        self.output_dir = Path(args.output_dir)
        # as AcceleratorState does: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu` = several CPU processes (gloo)
        process_state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        self._prepare_output_dir(process_state)
        set_seed(args.seed)
        self.model, self.processor = self._build_model()
        self.image_size = int(self.model.config.image_size)

        find_unused = args.find_unused_parameters == "yes"
        if args.find_unused_parameters == "auto" and process_state.num_processes > 1:  # only DDP cares
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
    def _prepare_output_dir(self, process_state: Any) -> None:
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
            if process_state.is_main_process:  # only the checkpoints this trainer wrote, never other files there
                for checkpoint in existing + sorted((out / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*.tmp")):
                    shutil.rmtree(checkpoint)
            existing = []
        process_state.wait_for_everyone()
        self.resume_checkpoint, self.resume_changes = None, {}
        if args.resume == "latest":
            self.resume_checkpoint = self._read_latest(existing, process_state.process_index)
        elif args.resume is not None:
            from bafenet.checkpoints import read_checkpoint

            self.resume_checkpoint = read_checkpoint(args.resume, process_state.process_index)
        if self.resume_checkpoint is not None:
            self._check_resume_settings(self.resume_checkpoint.settings)
        if process_state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            write_marker(out, COMMAND, finished=False)
        process_state.wait_for_everyone()

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
        processor_settings = parse_config_overrides(args.processor_overrides, "--processor-overrides")
        if args.model_name_or_path:
            from bafenet.inputs import check_model_path
            from bafenet.models.loading import load_model, load_processor

            check_model_path(args.model_name_or_path, "--model-name-or-path")
            model = load_model(args.model_name_or_path, option="--model-name-or-path")
            processor = load_processor(args.model_name_or_path, option="--model-name-or-path")
            try:
                return model, processor.with_settings(**processor_settings)
            except (ValueError, TypeError) as error:
                raise ValueError(f"--processor-overrides {args.processor_overrides!r}: {error}") from None
        if args.backbone_weights and not args.backbone_weights.endswith("-pypi"):
            from bafenet.models.loading import check_weights_file

            check_weights_file(args.backbone_weights)
        kwargs = dict(backbone=args.backbone, image_size=args.image_size, backbone_weights=args.backbone_weights)
        overrides = parse_config_overrides(args.config_overrides)
        if not args.backbone_weights and "freeze_backbone_bn" not in overrides:
            kwargs["freeze_backbone_bn"] = False  # frozen BN only makes sense with ImageNet statistics to keep
        kwargs.update(overrides)
        try:
            config = (BafeNetConfig.improved if args.mode == "improved" else BafeNetConfig.faithful)(**kwargs)
            return BafeNetForObjectDetection(config), BafeNetImageProcessor.from_model_config(config,
                                                                                               **processor_settings)
        except (ValueError, TypeError, RuntimeError) as error:
            raise ValueError(f"--config-overrides {args.config_overrides!r} / --processor-overrides "
                             f"{args.processor_overrides!r} / model options: {error}") from None

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
        if config.input_mode in ("tiles", "zoom"):
            zoom = config.input_mode == "zoom"
            sky = zoom and config.zoom_sky_size > 0
            transform = TileTransform(self.image_size, config.tile_scale, args.flip_probability, copy_paste,
                                      args.tile_target_probability, coarse_scale=config.zoom_coarse_scale if zoom
                                      else None, coarse_probability=args.zoom_coarse_probability if zoom else 0.0,
                                      frame_size=config.zoom_sky_size if sky else None,
                                      frame_probability=args.zoom_sky_probability if sky else 0.0)
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
                self.eval_loaders[name] = inference_loader(rows, self.processor, args.per_device_eval_batch_size,
                                                           workers)
        self.ground_truths = {name: ground_truths(rows) for name, rows in (("validation", self.val_rows),
                                                                            ("test", self.test_rows)) if rows is not None}

    def _resume(self, checkpoint: Any) -> None:
        """Load ``checkpoint`` into the prepared objects; apply the optimisation settings changed on --resume."""
        from bafenet.checkpoints import apply_checkpoint

        state = self.state
        fresh = [{k: g[k] for k in ("lr", "weight_decay")} for g in self.optimizer.param_groups]
        schedule = asdict(self.schedule)  # loading the scheduler overwrites the schedule object
        apply_checkpoint(checkpoint, self.accelerator, self.model, self.optimizer, self.scheduler)
        state.load_state_dict(checkpoint.state)
        self.last_checkpoint = checkpoint.folder
        if self.resume_changes:  # the checkpoint's values were restored above: put the new ones in
            self._apply_new_rates(fresh, schedule)
            changes = ", ".join(f"--{k.replace('_', '-')} {new} (was {old})" for k, (old, new) in
                                self.resume_changes.items())
            self._print(f"--resume: applying {changes} from update {state.global_step + 1} on")
        self._print(f"resumed from {checkpoint.folder} (epoch {state.epoch}, update {state.global_step})")

    def _apply_new_rates(self, fresh: list[dict[str, float]], schedule: dict[str, Any]) -> None:
        """Give the restored optimiser this run's learning rates and weight decays (``fresh``, one per parameter
        group) and schedule settings (``schedule``, the fields of :class:`RecipeSchedule`) at the restored schedule
        position: the scheduler reloads its own state with the new base rates and schedule."""
        scheduler_state = self.scheduler.state_dict()
        schedule["time_fraction"] = self.schedule.time_fraction  # the restored clock
        self.schedule.__dict__.update(schedule)
        factor = self.schedule(scheduler_state["last_epoch"])  # the multiplier at the restored position
        rates = [new["lr"] * factor for new in fresh]
        for group, new, lr in zip(self.optimizer.param_groups, fresh, rates):
            group.update(weight_decay=new["weight_decay"], initial_lr=new["lr"], lr=lr)
        scheduler_state.update(base_lrs=[new["lr"] for new in fresh], _last_lr=rates,
                               lr_lambdas=[dict(schedule) for _ in scheduler_state["lr_lambdas"]])
        self.scheduler.load_state_dict(scheduler_state)

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

        from bafenet.inference import evaluation_loop, model_forward

        acc, loader = self.accelerator, self.prepared_eval[split]
        rows = self.val_rows if split == "validation" else self.test_rows
        model = self._unwrapped()  # no DDP collectives at inference; keeps the mixed-precision autocast wrapper
        model.eval()
        batches = tqdm(loader, desc=f"eval {split}", leave=False, disable=not acc.is_main_process)
        by_index = dict(evaluation_loop(model_forward(model, acc.device, torch.float32), self.processor, batches,
                                        self.args.detection_threshold,
                                        gather=lambda items: acc.gather_for_metrics(items, use_gather_object=True)))
        model.train()
        ids = rows["image_id"]
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
        """Prepare (or resume), run the epochs (validation, selection, checkpoints) until the last one or a limit,
        then test and write ``metrics.json``; returns its dict."""
        from tqdm.auto import tqdm

        args, state = self.args, self.state
        self._prepare()
        self._resume_or_start()
        self._announce()
        progress = tqdm(total=self.total_updates, initial=state.global_step, desc="train",
                        disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        stop_reason: str | None = self._should_stop() if state.global_step else None  # resumed past a limit
        self.model.train()
        self._start = time.perf_counter() - state.train_seconds
        while state.epoch < args.num_train_epochs and stop_reason is None:
            stop_reason = self._train_epoch(progress)
        progress.close()
        if stop_reason is not None:
            self._stopped_early(stop_reason)
        return self._finish(stop_reason)

    def _prepare(self) -> None:
        """Build the optimiser and the lr schedule and pass them, the model and the loaders through Accelerate."""
        args, acc = self.args, self.accelerator
        optimizer = build_optimizer(args, self.model)
        self.updates_per_epoch = math.ceil(
            math.ceil(len(self.train_loader.dataset) / (args.per_device_train_batch_size * acc.num_processes))
            / args.gradient_accumulation_steps
        )
        self.total_updates = self.updates_per_epoch * args.num_train_epochs
        if args.max_steps is not None:
            self.total_updates = min(self.total_updates, args.max_steps)
        self.schedule = RecipeSchedule(args.warmup_steps, args.warmup_factor, args.lr_milestones, args.lr_gamma,
                                       self.updates_per_epoch, acc.num_processes, cosine=args.lr_schedule == "cosine",
                                       min_factor=args.lr_min_factor, total_updates=self.total_updates)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        names = list(self.eval_loaders)
        prepared = acc.prepare(self.model, optimizer, self.train_loader, scheduler, *self.eval_loaders.values())
        self.model, self.optimizer, self.prepared_train, self.scheduler = prepared[:4]
        self.prepared_eval = dict(zip(names, prepared[4:]))
        self.last_checkpoint: Path | None = None
        self._running: dict[str, float] = {}  # loss sums since the last log line
        self._running_count = 0

    def _resume_or_start(self) -> None:
        """Load the checkpoint to resume, if any; write ``train_args.json`` and start the trackers."""
        args, acc = self.args, self.accelerator
        if self.resume_checkpoint is not None:
            self._resume(self.resume_checkpoint)
        elif args.resume == "latest":
            self._print(f"--resume: no checkpoint in {self.output_dir / 'checkpoints'}, starting afresh")
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in asdict(args).items()}
        acc.init_trackers("bafenet", config=hparams)

    def _announce(self) -> None:
        """Print the frozen parameters and the run's size; validate once first with ``--eval-before-training``."""
        args, acc, state = self.args, self.accelerator, self.state
        if self.frozen:
            self._print(f"{len(self.frozen)} parameter tensors get no gradient in this configuration and are frozen "
                        f"(requires_grad=False), so DDP needs no unused-parameter search: {', '.join(self.frozen)}")
        self._print(
            f"training on {self.train_split!r}: {len(self.train_rows)} images x{args.train_repeats}, "
            f"{acc.num_processes} process(es) x batch {args.per_device_train_batch_size} x accumulation "
            f"{args.gradient_accumulation_steps}, {self.updates_per_epoch} updates/epoch, {self.total_updates} "
            f"updates, optimizer {args.optimizer} lr {args.resolved_learning_rate}, mixed precision "
            f"{acc.mixed_precision}"
        )
        if args.eval_before_training and state.global_step == 0 and not state.history and self.val_rows is not None:
            self._select(self.evaluate("validation"), epoch=0)

    def _train_epoch(self, progress: Any) -> str | None:
        """Train the current epoch from where the state stands. Returns why training stops (``max_steps`` /
        ``max_train_minutes``) or None; a limit reached inside the epoch ends it there, unfinished."""
        acc, state = self.accelerator, self.state
        epoch = state.epoch
        loader = self.prepared_train
        if state.batch_in_epoch:
            loader = acc.skip_first_batches(self.prepared_train, state.batch_in_epoch)
        loader.set_epoch(epoch)  # the sampler's permutation (also on the skipping loader)
        stop_reason = None
        for batch in loader:
            stop_reason = self._train_batch(batch, epoch, progress)
            if stop_reason and not acc.gradient_state.end_of_dataloader:
                return stop_reason
        self._end_of_epoch(epoch, stop_reason)
        return stop_reason

    def _train_batch(self, batch: dict[str, Any], epoch: int, progress: Any) -> str | None:
        """One batch: forward, backward and, when gradients sync, the update and its bookkeeping (`_end_of_update`,
        whose stop decision it returns; None between updates)."""
        outputs, loss = self._forward_backward(batch, epoch)
        self.state.batch_in_epoch += 1
        for key, value in {"loss": loss, **(outputs.loss_dict or {})}.items():
            self._running[key] = self._running.get(key, 0.0) + float(value.detach())
        self._running_count += 1
        if not self.accelerator.sync_gradients:
            return None
        return self._end_of_update(progress)

    def _forward_backward(self, batch: dict[str, Any], epoch: int) -> tuple[Any, torch.Tensor]:
        """Forward and backward under gradient accumulation; stops on a non-finite loss before applying it; the
        optimiser and scheduler steps (Accelerate skips them between accumulated batches)."""
        args, acc = self.args, self.accelerator
        with acc.accumulate(self.model):
            outputs = self.model(**batch)
            loss = outputs.loss
            for callback in self.callbacks:
                loss = callback.on_loss(self, loss)
            bad = acc.reduce(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=acc.device), "sum")
            if bad.item() > 0:
                self._stop_on_nan(outputs, loss, epoch)
            acc.backward(loss)
            if args.max_grad_norm is not None and acc.sync_gradients:
                acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            if self.schedule.cosine and args.max_train_minutes:
                self.schedule.time_fraction = self._time_fraction(self._start)
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            for callback in self.callbacks:
                callback.on_optimizer_step(self)
        return outputs, loss

    def _end_of_update(self, progress: Any) -> str | None:
        """Count the update, log, checkpoint (``--checkpointing-steps``, not at an epoch's end: that one follows);
        returns the stop decision (`_should_stop`)."""
        args, state = self.args, self.state
        state.global_step += 1
        state.train_seconds = time.perf_counter() - self._start
        progress.update(1)
        if state.global_step % args.logging_steps == 0:
            self._log_train(progress)
        end_of_epoch = self.accelerator.gradient_state.end_of_dataloader
        if args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0 and not end_of_epoch:
            self.save_checkpoint()
        for callback in self.callbacks:
            callback.on_update_end(self)
        return self._should_stop()

    def _end_of_epoch(self, epoch: int, stop_reason: str | None) -> None:
        """An epoch ran to its end: validate (every ``--eval-every-epochs`` and at the last) and checkpoint."""
        args, state = self.args, self.state
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        last = state.epoch == args.num_train_epochs or stop_reason is not None
        if self.val_rows is not None and (state.epoch % args.eval_every_epochs == 0 or last):
            paused = time.perf_counter()
            self._select(self.evaluate("validation"), epoch=state.epoch)
            self._start += time.perf_counter() - paused  # training time (--max-train-minutes) excludes validation
        self.save_checkpoint()

    def _stopped_early(self, stop_reason: str) -> None:
        """Report the stop; inside an epoch, checkpoint and score this state too."""
        state = self.state
        self._print(f"stopped early ({stop_reason}) at update {state.global_step}")
        if state.batch_in_epoch:
            self.save_checkpoint()
            if self.val_rows is not None:
                self._select(self.evaluate("validation"), epoch=state.epoch)

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

    def _time_fraction(self, start: float) -> float:
        """Training time so far out of ``--max-train-minutes`` (the cosine schedule's clock), the same on every
        process (their mean)."""
        fraction = (time.perf_counter() - start) / (60 * self.args.max_train_minutes)
        if self.accelerator.num_processes > 1:
            fraction = float(self.accelerator.reduce(torch.tensor([fraction], device=self.accelerator.device),
                                                     "mean").item())
        return fraction

    def _should_stop(self) -> str | None:
        args, state = self.args, self.state
        flags = [args.max_steps is not None and state.global_step >= args.max_steps,
                 args.max_train_minutes is not None and state.train_seconds >= 60 * args.max_train_minutes]
        if args.max_train_minutes is not None:  # clocks differ per process: agree on the decision
            flags[1] = bool(self.accelerator.reduce(torch.tensor([float(flags[1])], device=self.accelerator.device),
                                                    "sum").item())
        return "max_steps" if flags[0] else "max_train_minutes" if flags[1] else None

    def _log_train(self, progress: Any) -> None:
        """Log the mean losses since the last log line, the lr (and D-Adapt's effective lr); start a new mean."""
        logs = {f"train/{k}": v / self._running_count for k, v in self._running.items()}
        logs["train/lr"] = self.scheduler.get_last_lr()[0]
        group = self.optimizer.param_groups[0]
        if "d" in group:
            logs["train/effective_lr"] = group["d"] * group["lr"]
        logs["train/epoch"] = self.state.epoch
        self.accelerator.log(logs, step=self.state.global_step)
        progress.set_postfix(loss=f"{logs['train/loss']:.3f}", lr=f"{logs['train/lr']:.3g}")
        self._running, self._running_count = {}, 0

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


def train(args: BafeNetTrainingArguments) -> dict[str, Any]:
    """Run one training (see the module docstring); returns the metrics written to ``metrics.json``.

    The main process holds the output folder's lock (`bafenet.outputs.OutputLock`) for the whole run.
    """
    import contextlib

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from bafenet.outputs import OutputLock, check_not_protected

    check_not_protected(args.output_dir, _local_inputs(args), "--output-dir")
    torch.set_flush_denormal(True)  # denormal activations slow CPU arithmetic several times (bafenet.cli.flush_denormals)
    process_state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    lock = OutputLock(args.output_dir, COMMAND) if process_state.is_main_process else contextlib.nullcontext()
    with lock:
        return BafeNetTrainer(args).train()


Trainer = BafeNetTrainer  # the 0.2 name
