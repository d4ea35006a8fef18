"""BAFE-Net against a torchvision FCOS peer at equal wall time on the real DenseSIRST devkit; both scored by
``bafenet evaluate``.

    python benchmarks/bench_accuracy_budget.py --minutes 30 [--sequential] [--ours-args "..."] [--peer-args "..."]
    python benchmarks/bench_accuracy_budget.py --smoke        # synthetic devkit, tiny models, well under a minute

1. Builds the devkit (read in place; the images missing from it are skipped: 399 train / 197 validation / 256 test)
   once into ``--cache-dir`` (default /tmp/bafenet_bench_cache, outside the repo) and reuses it afterwards.
2. Trains OURS with the normal trainer, ``python -m bafenet train --max-train-minutes M`` + ``--ours-args`` (default
   ``--recipe cpu`` when ``bafenet train`` has it, else the CPU choice of issue 12: ImageNet Lite0, improved mode,
   AdamW); it selects its checkpoint on validation itself. Trains the PEER, ``benchmarks/fcos_peer.py`` (FCOS with
   the same ImageNet Lite0 backbone, exp box regression) + ``--peer-args``, for the same M minutes on the same
   training split, selected on validation.
   Fairness: by default both run CONCURRENTLY, each pinned to 1 torch thread and 0 loader workers, so they get the
   same CPU share whatever else loads the machine. ``--sequential`` runs one after the other with every thread
   (ours then keeps its own loader-worker setting).
3. Scores both on the test split with ``bafenet evaluate`` (ours: ``--model``; the peer: ``--predictions``), and
   prints mAP07 / mAP12 / recall (overall and per image-size group), updates, seconds per update and the
   ours/peer ratios. Everything lands in ``--output-dir`` (default /tmp/bafenet_bench_accuracy/<time>):
   ``ours/`` and ``peer/`` (models, logs, metrics), ``ours_test.json`` / ``peer_test.json`` (evaluate results) and
   ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEVKIT = REPO.parent / "shared/data/DenseSIRST/data/SIRSTdevkit"
DEFAULT_OURS_ARGS = "--recipe cpu"
SMOKE_OURS_SIZE = ("--image-size 128 --config-overrides fpn_channels=32,num_head_convs=1,adapter_channels=16,"
                   "tile_window=128,tile_scale=1.0")
SMOKE_PEER_ARGS = "--image-size 128 --fpn-channels 32 --num-convs 1"
# image-size groups by original area: the 1280x1024 / 1918x1080 / 1280x720 frames, the 640x512-like ones, the small


def cached_dataset(cache_dir: Path, devkit: Path | None) -> Path:
    """The built dataset in ``cache_dir``: the devkit's (``None``: a 12-image synthetic one), built once."""
    from bafenet.data.build import build_dataset

    out = cache_dir / ("densesirst" if devkit is not None else "smoke_densesirst")
    key = str(devkit.resolve()) if devkit is not None else "synthetic num_images=12 seed=0"
    marker = out.with_name(out.name + ".built.json")
    if marker.is_file() and json.loads(marker.read_text()).get("source") == key and (out / "README.md").is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    if devkit is None:
        from bafenet.data.synthetic import write_synthetic_devkit

        devkit = write_synthetic_devkit(cache_dir / "smoke_devkit" / "SIRSTdevkit", num_images=12, seed=0)
    start = time.perf_counter()
    build_dataset(devkit, out, skip_missing=True, configs=["default"], stats=False)
    print(f"built {out} in {time.perf_counter() - start:.0f} s (cached for later runs)", flush=True)
    marker.write_text(json.dumps({"source": key}) + "\n")
    return out


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    src = str(REPO / "src")  # this checkout's bafenet, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    return env


def training_commands(args: argparse.Namespace, dataset: Path, out: Path, threads: int) -> dict[str, list[str]]:
    """The training command lines, same data and minutes: ours (the normal trainer), the FCOS peer (fcos_peer.py)
    unless ``--no-peer``, and a second run of the normal trainer with ``--versus-args`` when given."""
    def bafenet_train(name: str, extra: str) -> list[str]:
        command = [sys.executable, "-m", "bafenet", "train", "--dataset", str(dataset), "--output-dir", str(out / name),
                   "--overwrite-output-dir", "--max-train-minutes", str(args.minutes), "--test-split", "",
                   "--report-to", "none", "--checkpointing-steps", "0", "--seed", str(args.seed)]
        if not args.sequential:
            command += ["--dataloader-num-workers", "0"]
        if args.max_eval_images is not None:
            command += ["--max-eval-images", str(args.max_eval_images)]
        return command + shlex.split(extra)

    commands = {"ours": bafenet_train("ours", args.ours_args)}
    if args.versus_args is not None:
        commands["versus"] = bafenet_train("versus", args.versus_args)
    if not args.no_peer:
        peer = [sys.executable, str(REPO / "benchmarks" / "fcos_peer.py"), "--dataset", str(dataset), "--output-dir",
                str(out / "peer"), "--minutes", str(args.minutes), "--threads", str(threads), "--seed", str(args.seed)]
        if args.max_eval_images is not None:
            peer += ["--max-eval-images", str(args.max_eval_images)]
        commands["peer"] = peer + shlex.split(args.peer_args)
    return commands


def run_all(commands: dict[str, list[str]], out: Path, threads: int, concurrent: bool, stage: str) -> None:
    """Run the commands (concurrently or one by one), each logging to ``out/<name>_<stage>.log``; fail loudly."""
    env = _env(threads)
    pending = list(commands.items())
    while pending:
        batch, pending = (pending, []) if concurrent else (pending[:1], pending[1:])
        running = []
        for name, command in batch:
            log = out / f"{name}_{stage}.log"
            print(f"[{stage}] {name}: {shlex.join(command)}\n    log: {log}", flush=True)
            with log.open("w") as handle:
                running.append((name, log, subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                                            env=env, cwd=REPO)))
        for name, log, process in running:
            if process.wait() != 0:
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
                raise SystemExit(f"{stage} of {name} failed (exit {process.returncode}); end of {log}:\n{tail}")


def evaluate_in_process(commands: dict[str, list[str]], out: Path) -> dict[str, float]:
    """``bafenet evaluate ARGS`` through its CLI entry point, in this process (one interpreter start-up less), every
    thread; output to ``out/<name>_evaluate.log``. Returns each evaluation's seconds."""
    import contextlib

    import torch

    from bafenet.cli import main as bafenet_main

    torch.set_num_threads(os.cpu_count() or 1)
    seconds = {}
    for name, argv in commands.items():
        log = out / f"{name}_evaluate.log"
        print(f"[evaluate] {name}: bafenet {shlex.join(argv)}\n    log: {log}", flush=True)
        began = time.perf_counter()
        with log.open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            code = bafenet_main(argv)
        seconds[name] = round(time.perf_counter() - began, 1)
        if code != 0:
            raise SystemExit(f"bafenet evaluate of {name} failed (exit {code}); see {log}")
    return seconds


def bafenet_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """Updates, training seconds, s/update, the selected and the last validation mAP07 of a `bafenet train` run."""
    seconds = 60 * metrics["train_minutes"]
    chosen = metrics.get("selected") or metrics["last"]  # --paper-protocol selects nothing
    return {"updates": metrics["global_step"], "train_seconds": round(seconds, 1),
            "seconds_per_update": round(seconds / max(metrics["global_step"], 1), 3),
            "validation_mAP07": (chosen.get("validation") or {}).get("mAP07"), "selected_update": chosen["step"],
            "last_validation_mAP07": (metrics["last"].get("validation") or {}).get("mAP07")}


def training_figures(out: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Updates, training seconds, s/update and the selected validation mAP07 of each run."""
    figures = {}
    for name in names:
        metrics = json.loads((out / name / "metrics.json").read_text())
        if name == "peer":
            figures[name] = {"updates": metrics["updates"], "train_seconds": metrics["train_seconds"],
                             "seconds_per_update": metrics["seconds_per_update"],
                             "validation_mAP07": metrics["selected"]["mAP07"],
                             "selected_update": metrics["selected"]["update"]}
        else:
            figures[name] = bafenet_figures(metrics)
    return figures


def format_table(summary: dict[str, Any], other: str = "peer") -> str:
    """Side-by-side table: test metrics (overall, per size group), training figures, ratios of ours to ``other``
    (``peer``: the FCOS peer, ``versus``: the second bafenet run)."""
    from bafenet.metrics.breakdown import SIZE_GROUPS

    rows: list[tuple[str, Any, Any]] = []
    for key in ("mAP07", "mAP12", "recall"):
        rows.append((f"test {key}", summary["ours"]["test"][key], summary[other]["test"][key]))
    for name, _ in SIZE_GROUPS:  # bafenet.metrics.breakdown: the groups `bafenet evaluate` reports
        ours, peer = summary["ours"]["size_groups"].get(name), summary[other]["size_groups"].get(name)
        if ours and peer:
            for key in ("mAP07", "mAP12"):
                rows.append((f"  {name}, {ours['images']} img: {key}", ours[key], peer[key]))
    for key in ("validation_mAP07", "last_validation_mAP07", "updates", "seconds_per_update", "train_seconds"):
        if key in summary["ours"]["training"] and key in summary[other]["training"]:
            rows.append((key.replace("_", " "), summary["ours"]["training"][key], summary[other]["training"][key]))
    rows.append(("test seconds", summary["ours"].get("test_seconds"), summary[other].get("test_seconds")))

    def cell(value: Any) -> str:
        if not isinstance(value, float):
            return str(value)
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.0f}"

    width = max(len(r[0]) for r in rows) + 2
    title = "FCOS peer" if other == "peer" else other
    lines = [f"{'':<{width}}{'ours':>10}{title:>12}{'ours/' + other:>12}"]
    for label, ours, peer in rows:
        ratio = f"{ours / peer:.2f}" if isinstance(ours, (int, float)) and peer else "n/a"
        lines.append(f"{label:<{width}}{cell(ours):>10}{cell(peer):>12}{ratio:>12}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall time of EACH model")
    parser.add_argument("--devkit", type=Path, default=DEFAULT_DEVKIT, help="SIRSTdevkit folder (read in place)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="an already built dataset folder (bafenet data build): skips the devkit and the cache")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bafenet_bench_cache"),
                        help="where the built dataset is kept between runs (outside the repo)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="models, logs and results (default /tmp/bafenet_bench_accuracy/<time>)")
    parser.add_argument("--ours-args", default=None,
                        help=f"extra `bafenet train` options for ours (default: `{DEFAULT_OURS_ARGS}`)")
    parser.add_argument("--peer-args", default="", help="extra benchmarks/fcos_peer.py options (e.g. --checkpoints 3)")
    parser.add_argument("--versus-args", default=None,
                        help="also train a second bafenet model with these `bafenet train` options (e.g. `--recipe "
                             "cpu-tiles`), concurrently and for the same minutes, scored the same way")
    parser.add_argument("--no-peer", action="store_true", help="do not train the FCOS peer (with --versus-args)")
    parser.add_argument("--sequential", action="store_true",
                        help="train one after the other with every thread instead of concurrently on 1 thread each")
    parser.add_argument("--smoke", action="store_true",
                        help="plumbing check: 12-image synthetic devkit, 128² tiny models, a few seconds of training")
    parser.add_argument("--max-eval-images", type=int, default=None,
                        help="score only the first N validation and test images (a quick look, not a result)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes = min(args.minutes, 0.05)
        args.ours_args = f"{DEFAULT_OURS_ARGS if args.ours_args is None else args.ours_args} {SMOKE_OURS_SIZE}"
        args.peer_args = f"{SMOKE_PEER_ARGS} {args.peer_args}"
    elif args.ours_args is None:
        args.ours_args = DEFAULT_OURS_ARGS
    if args.no_peer and args.versus_args is None:
        parser.error("--no-peer leaves nothing to compare with: pass --versus-args too")
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")
    if args.dataset is not None and not (args.dataset / "README.md").is_file():
        parser.error(f"--dataset {args.dataset}: not a built dataset folder (no README.md); build one with "
                     "`bafenet data build` or leave --dataset out")
    if not args.smoke and args.dataset is None and not (args.devkit / "Splits").is_dir():
        parser.error(f"--devkit {args.devkit}: no SIRSTdevkit there (no Splits/); pass --devkit DIR or --smoke")
    return args


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "src"))  # this checkout's bafenet, as in the subprocesses
    import datasets

    args = parse_args(argv)
    out = args.output_dir or Path("/tmp/bafenet_bench_accuracy") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    dataset = args.dataset or cached_dataset(args.cache_dir, None if args.smoke else args.devkit)
    threads = (os.cpu_count() or 1) if args.sequential else 1
    mode = f"sequential, {threads} threads each" if args.sequential else "concurrent, 1 thread and 0 workers each"
    print(f"ours vs FCOS peer: {args.minutes} min each ({mode}) on {dataset}; output in {out}", flush=True)

    start = time.perf_counter()
    commands = training_commands(args, dataset, out, threads)
    run_all(commands, out, threads, not args.sequential, "train")
    print(f"trainings done after {time.perf_counter() - start:.0f} s", flush=True)
    test_split = "test" if args.max_eval_images is None else f"test[:{args.max_eval_images}]"
    evaluate = ["evaluate", "--dataset", str(dataset), "--split", test_split]
    evaluations = {name: [*evaluate, "--model", str(out / name), "--device", "cpu", "--out",
                          str(out / f"{name}_test.json")] for name in commands if name != "peer"}
    if "peer" in commands:
        evaluations["peer"] = [*evaluate, "--predictions", str(out / "peer" / "test_detections.json"), "--out",
                               str(out / "peer_test.json")]
    test_seconds = evaluate_in_process(evaluations, out)

    test_rows = datasets.load_dataset(str(dataset), "default", split=test_split)
    figures = training_figures(out, list(commands))
    summary: dict[str, Any] = {"minutes": args.minutes, "mode": mode, "dataset": str(dataset),
                               "ours_args": args.ours_args, "peer_args": args.peer_args,
                               "versus_args": args.versus_args}
    for name in commands:
        results = json.loads((out / f"{name}_test.json").read_text())
        summary[name] = {"test": {k: results[k] for k in ("mAP07", "mAP12", "recall", "num_detections")},
                         "size_groups": results["by_size"], "training": figures[name],
                         "test_seconds": test_seconds[name], "sky_iou": results.get("sky_IoU")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nequal wall time: {args.minutes} min of training each ({mode}); test split ({len(test_rows)} images) "
          f"scored by `bafenet evaluate`; {time.perf_counter() - start:.0f} s in all")
    for other in (name for name in ("versus", "peer") if name in commands):
        print(format_table(summary, other))
    print(f"wrote {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
