"""Train BAFE-Net R18 on the real DenseSIRST devkit for a bounded CPU time; print validation mAP07 before and after.

    python benchmarks/bench_train_real.py --minutes 15

Builds the devkit (read in place, never copied into the repo; images missing from the devkit are skipped) into a
temporary Parquet folder unless ``--dataset`` names a built one, then runs the normal trainer (``bafenet.training``)
with the paper's recipe, ``--eval-before-training`` and ``--max-train-minutes``. The backbone starts from random
weights (no ImageNet ResNet-18 weights can be installed offline, see docs/pretrained_weights.md), and a CPU budget of
minutes covers about a hundred of the recipe's 11,980 updates (the 399 `train` images present, x3, 20 epochs):
the figures show the pipeline learns, not the paper's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEVKIT = REPO.parent / "shared/data/DenseSIRST/data/SIRSTdevkit"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devkit", type=Path, default=DEFAULT_DEVKIT, help="SIRSTdevkit folder (read in place)")
    parser.add_argument("--dataset", type=Path, default=None, help="an already built dataset folder (skips the build)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget in minutes (at most 20)")
    parser.add_argument("--output-dir", type=Path, default=None, help="trainer output (default: a temporary folder)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--optimizer", default="dadapt_adam", choices=["dadapt_adam", "adamw"])
    parser.add_argument("--max-eval-images", type=int, default=None, help="score only the first N validation images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 20:
        parser.error("--minutes must be in (0, 20]")

    from bafenet.training import TrainingArguments, train

    with tempfile.TemporaryDirectory(prefix="bench_train_real_") as tmp:
        dataset = args.dataset
        if dataset is None:
            from bafenet.data.build import build_dataset

            if not (args.devkit / "Splits").is_dir():
                print(f"real devkit not found at {args.devkit}", file=sys.stderr)
                return 2
            start = time.perf_counter()
            dataset = build_dataset(args.devkit, Path(tmp) / "densesirst", skip_missing=True)
            print(f"built {dataset} in {time.perf_counter() - start:.0f} s")
        output_dir = args.output_dir or Path(tmp) / "run"
        training = TrainingArguments(
            dataset=str(dataset), output_dir=str(output_dir), overwrite_output_dir=True, backbone=args.backbone,
            image_size=args.image_size, optimizer=args.optimizer, seed=args.seed, eval_before_training=True,
            max_train_minutes=args.minutes, max_eval_images=args.max_eval_images, checkpointing_steps=0,
            dataloader_num_workers=1, test_split="", report_to="none",
        )
        start = time.perf_counter()
        metrics = train(training)
        wall = time.perf_counter() - start
        history = metrics["validation_history"]
        first, last = history[0]["validation"], history[-1]["validation"]
        summary = {
            "backbone": args.backbone, "image_size": args.image_size, "optimizer": args.optimizer,
            "train_minutes": metrics["train_minutes"], "updates": metrics["global_step"],
            "images_seen": metrics["global_step"] * training.per_device_train_batch_size,
            "validation_images": first["num_images"], "validation_targets": first["num_targets"],
            "start": {k: first[k] for k in ("mAP07", "mAP12", "recall")},
            "end": {k: last[k] for k in ("mAP07", "mAP12", "recall")},
            "wall_minutes_including_build_and_eval": round(wall / 60, 1),
        }
        print(json.dumps(summary, indent=2))
        print(f"validation mAP07: start {first['mAP07']:.4f} -> end {last['mAP07']:.4f} after "
              f"{metrics['global_step']} updates ({metrics['train_minutes']:.1f} min of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
