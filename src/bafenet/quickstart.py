"""``bafenet quickstart``: the whole pipeline on a synthetic devkit, in a few minutes on a laptop CPU.

    bafenet quickstart [--out bafenet-quickstart] [--fast]

1. writes a synthetic SIRSTdevkit (same layout and conventions as DenseSIRST; nothing is downloaded),
2. builds it into a ``datasets.load_dataset``-able Parquet folder (``bafenet data build``),
3. trains a small BAFE-Net on its ``train`` split (``bafenet train``, the code of ``train_accelerate.py``),
4. scores the ``test`` split (``bafenet evaluate``: VOC mAP07/mAP12, COCO, IoU/nIoU/Pd/Fa, points, sky IoU),
5. draws the predictions on test images (``bafenet predict --sky``),
6. leaves the trained model as a ``save_pretrained`` folder (weights, config, remote code, image processor),

then prints where every artefact is, the metrics, and the equivalent command of each step. Every step calls the
same function as its command, in this process. The model is the recommended CPU recipe (``--recipe cpu``: ImageNet
EfficientNet-Lite0, a narrow improved head, the zoom mode: a whole-frame pass for the sky and for proposals, 256 px
windows at x2.5 where they point) trained for a few minutes: the numbers show a detector that finds the synthetic
targets; they say nothing about the paper's results (train on the real DenseSIRST for that, see the README's
training section).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .outputs import OutputLock, claim_dir, write_marker

MARKER = "quickstart.json"
COMMAND = "quickstart"

__all__ = ["QuickstartSettings", "run_quickstart"]


@dataclass(frozen=True)
class QuickstartSettings:
    """Sizes of the quickstart run (the defaults take ~2-3 minutes on 2 CPU cores; ``fast()`` ~30 s)."""

    num_images: int = 64
    # the recommended CPU recipe (`bafenet train --recipe cpu`): ImageNet EfficientNet-Lite0, improved head at FPN
    # width 64, the zoom mode (whole-frame passes for the sky and proposals, 256 px windows at x2.5 where they point)
    recipe: str = "cpu"
    config_overrides: str = ""  # extra BafeNetConfig fields on top of the recipe's
    epochs: int = 20
    batch_size: int = 4
    max_train_minutes: float = 3.0
    num_predict_images: int = 4
    predict_operating_threshold: float | None = None  # None: the model's operating point (best-F1 score on validation)
    max_steps: int | None = None
    max_eval_images: int | None = None
    seed: int = 0

    @classmethod
    def fast(cls) -> "QuickstartSettings":
        """A smoke-test size: 12 images, 2 updates (used by the test suite)."""
        return cls(num_images=12, epochs=1, batch_size=4, max_train_minutes=1.0, num_predict_images=2,
                   predict_operating_threshold=0.0, max_steps=2, max_eval_images=2)


def _set_threads() -> None:
    """Use the idle cores: on a CPU that other jobs already load, OpenMP threads stall each other at every barrier
    (measured: an update took 15x longer with 2 threads than with 1 on a 2-core machine at load 6). An explicit
    ``OMP_NUM_THREADS`` is left alone."""
    import os

    import torch

    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return
    idle = (os.cpu_count() or 1) - int(os.getloadavg()[0])
    threads = max(1, min(torch.get_num_threads(), idle))
    if threads != torch.get_num_threads():
        print(f"torch threads: {threads} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        torch.set_num_threads(threads)


def _step(index: int, total: int, title: str) -> float:
    print(f"\n=== [{index}/{total}] {title} ===", flush=True)
    return time.perf_counter()


def _done(start: float, message: str) -> None:
    print(f"--> {message} ({time.perf_counter() - start:.1f} s)", flush=True)


def _prepare_out_dir(out: Path, overwrite: bool = False) -> None:
    """Create ``out``; an earlier quickstart there is deleted, any other non-empty folder is refused
    (`bafenet.outputs.claim_dir`)."""
    if claim_dir(out, COMMAND, overwrite=overwrite):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, COMMAND, finished=False)  # a killed run is still ours
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")


def _quote(args: list[str]) -> str:
    return " ".join(a if a and all(c not in a for c in " '\"") else repr(a) for a in args)


def run_quickstart(
    out: str | Path = "bafenet-quickstart", settings: QuickstartSettings | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Run the six steps into ``out``; returns the summary written to ``out/quickstart.json``."""
    out = Path(out).expanduser().absolute()
    claim_dir(out, COMMAND, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out, COMMAND):
        summary = _run_steps(out, settings or QuickstartSettings(), overwrite)
    write_marker(out, COMMAND)
    return summary


def _run_steps(out: Path, settings: QuickstartSettings, overwrite: bool) -> dict[str, Any]:
    from .cli import main as bafenet

    started = time.perf_counter()
    _prepare_out_dir(out, overwrite)
    devkit_dir, dataset_dir, model_dir = out / "SIRSTdevkit", out / "densesirst", out / "model"
    results_path, predictions_dir = out / "evaluation" / "test_results.json", out / "predictions"
    commands: dict[str, str] = {}
    total = 6

    # 1. synthetic devkit ----------------------------------------------------------------------------------------
    t = _step(1, total, "synthetic SIRSTdevkit")
    from .data.devkit import SirstDevkit
    from .data.synthetic import write_synthetic_devkit

    write_synthetic_devkit(devkit_dir, num_images=settings.num_images, seed=settings.seed)
    devkit = SirstDevkit(devkit_dir)
    test_ids = devkit.split_ids("test_v2")
    commands["devkit"] = (f"bafenet data synth --out {devkit_dir} --num-images {settings.num_images} "
                          f"--seed {settings.seed}")
    _done(t, f"{settings.num_images} images written to {devkit_dir}")

    # 2. dataset build -------------------------------------------------------------------------------------------
    t = _step(2, total, "build the Parquet dataset (datasets.load_dataset-able folder + card)")
    from .data.build import build_dataset

    build_dataset(devkit_dir, dataset_dir)
    commands["dataset"] = f"bafenet data build --devkit {devkit_dir} --out {dataset_dir}"
    _done(t, f"dataset folder {dataset_dir}  (datasets.load_dataset({str(dataset_dir)!r}))")

    # 3. training ------------------------------------------------------------------------------------------------
    t = _step(3, total, "train a small BAFE-Net (bafenet train = train_accelerate.py)")
    from .training import BafeNetTrainingArguments, command_line, train

    _set_threads()
    overrides = {"config_overrides": settings.config_overrides} if settings.config_overrides else {}
    train_args = BafeNetTrainingArguments.from_recipe(
        settings.recipe, dataset=str(dataset_dir), output_dir=str(model_dir), overwrite_output_dir=True,
        num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        eval_every_epochs=settings.epochs, test_split="", checkpointing_steps=0,
        max_train_minutes=settings.max_train_minutes, report_to="none", seed=settings.seed,
        max_steps=settings.max_steps, max_eval_images=settings.max_eval_images, **overrides,
    )
    commands["train"] = "accelerate launch train_accelerate.py " + _quote(command_line(train_args))
    train(train_args)
    train_metrics = json.loads((model_dir / "metrics.json").read_text())
    _done(t, f"model saved to {model_dir}")

    # 4. evaluation ----------------------------------------------------------------------------------------------
    t = _step(4, total, "evaluate on the test split (bafenet evaluate)")
    eval_args = ["evaluate", "--model", str(model_dir), "--dataset", str(dataset_dir), "--split", "test",
                 "--out", str(results_path)]
    commands["evaluate"] = "bafenet " + _quote(eval_args)
    code = bafenet(eval_args)
    if code != 0:
        raise RuntimeError(f"evaluation failed with exit code {code}; see the messages above")
    results = json.loads(results_path.read_text())
    _done(t, f"results in {results_path}")

    # 5. predictions drawn ---------------------------------------------------------------------------------------
    t = _step(5, total, "draw predictions on test images (bafenet predict)")
    images = [str(devkit.read(image_id).image_path) for image_id in test_ids[: settings.num_predict_images]]
    predict_args = ["predict", "--model", str(model_dir), *images, "--out", str(predictions_dir), "--sky"]
    if settings.predict_operating_threshold is not None:
        predict_args += ["--operating-threshold", str(settings.predict_operating_threshold)]
    else:
        print(f"drawing threshold {train_metrics.get('operating_threshold')} (the model's operating point: the "
              "best-F1 score on validation, stored in config.json by training)")
    commands["predict"] = "bafenet " + _quote(predict_args)
    code = bafenet(predict_args)
    if code != 0:
        raise RuntimeError(f"prediction failed with exit code {code}; see the messages above")
    _done(t, f"overlays in {predictions_dir / 'overlays'}")

    # 6. the saved model -----------------------------------------------------------------------------------------
    t = _step(6, total, "the trained model, as save_pretrained wrote it")
    from .models.loading import load_model, load_processor

    # reloaded through the installed classes: no code from the folder runs unless the user asks for it (the folder's
    # own code, as users without bafenet load it, is tested by tests/test_model_remote_code.py)
    model = load_model(model_dir)
    load_processor(model_dir)
    num_params = sum(p.numel() for p in model.parameters())
    files = sorted(p.name for p in model_dir.iterdir() if p.is_file())
    _done(t, f"{model_dir}: {', '.join(files)} ({num_params / 1e6:.1f} M parameters; reloads with "
             "AutoModelForObjectDetection.from_pretrained(..., trust_remote_code=True))")

    metric_keys = ("mAP07", "mAP12", "recall", "coco_AP50", "Pd", "Fa_x1e6", "point_f1", "sky_IoU")
    summary = {
        "status": "done",
        "seconds": round(time.perf_counter() - started, 1),
        "settings": asdict(settings),
        "artefacts": {
            "devkit": str(devkit_dir), "dataset": str(dataset_dir), "model": str(model_dir),
            "evaluation": str(results_path), "pr_curve": str(results_path.with_name("test_results_pr_curve.png")),
            "predictions": str(predictions_dir / "predictions.json"), "overlays": str(predictions_dir / "overlays"),
        },
        "test_metrics": {k: results.get(k) for k in metric_keys if k in results},
        "num_test_images": results.get("num_images"),
        "num_test_targets": results.get("num_targets"),
        "training": {k: v for k, v in train_metrics.items() if not isinstance(v, (dict, list))},
        "commands": commands,
    }
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, out)
    return summary


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    art = summary["artefacts"]

    def rel(path: str) -> str:
        try:
            return str(Path(path).relative_to(Path.cwd()))
        except ValueError:
            return path

    rows = [
        ("synthetic devkit", rel(art["devkit"]), "SIRSTdevkit layout: PNGImages/, SIRST/, SkySeg/, Splits/"),
        ("dataset", rel(art["dataset"]), f"datasets.load_dataset({rel(art['dataset'])!r})"),
        ("trained model", rel(art["model"]),
         "AutoModelForObjectDetection.from_pretrained(..., trust_remote_code=True)"),
        ("test metrics", rel(art["evaluation"]), "+ PR curve " + Path(art["pr_curve"]).name),
        ("predictions", rel(art["predictions"]), "boxes (xyxy, original pixels), scores, sky masks"),
        ("overlay pictures", rel(art["overlays"]), "boxes, tinted sky, zoom inset of the densest cluster"),
    ]
    width = max(len(r[0]) for r in rows)
    path_width = max(len(r[1]) for r in rows)
    print(f"\nQuickstart finished in {summary['seconds']:.0f} s. Artefacts:")
    for name, path, note in rows:
        print(f"  {name.ljust(width)}  {path.ljust(path_width)}  {note}")
    metrics = summary["test_metrics"]
    shown = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    print(f"Test split ({summary['num_test_images']} synthetic images, {summary['num_test_targets']} targets): {shown}")
    print("(a small model trained for about a minute on synthetic data: not the paper's numbers)")
    print(f"Summary with the equivalent command of every step: {rel(str(out / MARKER))}")
