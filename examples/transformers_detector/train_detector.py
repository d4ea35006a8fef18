"""Fine-tune a transformers detector (DETR / RT-DETR family, any `AutoModelForObjectDetection` checkpoint) on
DenseSIRST without losing its 2-10 px targets, and score it with `bafenet evaluate --predictions`.

What differs from transformers' `run_object_detection.py` (see the README section "Transformers detectors"):

- no resize: training sees `--tile-size` crops of the original frames (a 1918x1080 frame is never shrunk), placed on
  a target most of the time; boxes are clipped to the crop and kept whatever their area (no `min_area`);
- inference slides `--tile-size` windows with `--overlap` over each whole frame and merges them with NMS;
- the test split's detections are written as the JSON `bafenet evaluate --predictions` reads, then scored by the same
  code as BAFE-Net's numbers.

    python examples/transformers_detector/train_detector.py --dataset ./densesirst --model PekingU/rtdetr_r18vd \\
        --output-dir runs/rtdetr --max-steps 3000
    python examples/transformers_detector/train_detector.py --dataset ./densesirst --tiny rt_detr \\
        --output-dir /tmp/rtdetr-tiny --max-steps 20      # a random tiny model built here, nothing downloaded
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class Arguments:
    dataset: str = field(metadata={"help": "dataset folder of `bafenet data build` or a Hub dataset repo id"})
    output_dir: str = field(metadata={"help": "where the model, predictions.json and results.json go"})
    model: str | None = field(default=None, metadata={"help": "AutoModelForObjectDetection checkpoint (folder or id)"})
    tiny: str | None = field(default=None, metadata={"help": "instead of --model: a random tiny 'detr' or 'rt_detr'"})
    dataset_config: str = field(default="default", metadata={"help": "dataset config: default (v2 splits) or v1"})
    train_split: str = "train"
    eval_split: str = field(default="test", metadata={"help": "split whose detections are written and scored"})
    tile_size: int = field(default=320, metadata={"help": "crop / window side in original pixels (multiple of 32)"})
    overlap: int = field(default=32, metadata={"help": "overlap of the inference windows, px"})
    max_steps: int = 2000
    batch_size: int = 4
    learning_rate: float = 1e-4
    target_crop_probability: float = field(default=0.8, metadata={"help": "share of crops placed on a target"})
    seed: int = 0


def tiny_model(kind: str) -> torch.nn.Module:
    """A randomly initialised, very small DETR or RT-DETR with one class (built here: nothing is downloaded)."""
    from transformers import (DetrConfig, DetrForObjectDetection, ResNetConfig, RTDetrConfig,
                              RTDetrForObjectDetection, RTDetrResNetConfig)

    labels = {"id2label": {0: "target"}, "label2id": {"target": 0}}
    if kind == "detr":
        backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                layer_type="basic", out_features=["stage4"])
        return DetrForObjectDetection(DetrConfig(
            backbone_config=backbone, use_pretrained_backbone=False, d_model=32, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
            num_queries=50, **labels))
    if kind == "rt_detr":
        backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                      layer_type="basic", out_features=["stage2", "stage3", "stage4"])
        return RTDetrForObjectDetection(RTDetrConfig(
            backbone_config=backbone, use_pretrained_backbone=False, encoder_in_channels=[16, 16, 16],
            encoder_hidden_dim=32, encoder_ffn_dim=64, encoder_layers=1, encoder_attention_heads=2, d_model=32,
            decoder_in_channels=[32, 32, 32], decoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2,
            decoder_n_points=2, num_queries=50, num_denoising=10, **labels))
    raise ValueError(f"--tiny {kind!r}: expected 'detr' or 'rt_detr'")


def load_detector(args: Arguments) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """(model, image mean, image std): the checkpoint with one 'target' class, or a tiny random model."""
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    if (args.model is None) == (args.tiny is None):
        raise SystemExit("give exactly one of --model and --tiny")
    if args.tiny:
        model, mean, std = tiny_model(args.tiny), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    else:
        model = AutoModelForObjectDetection.from_pretrained(
            args.model, id2label={0: "target"}, label2id={"target": 0}, ignore_mismatched_sizes=True)
        processor = AutoImageProcessor.from_pretrained(args.model)  # only its normalisation is used
        mean = getattr(processor, "image_mean", None) or [0.0] * 3
        std = getattr(processor, "image_std", None) or [1.0] * 3
    return model, np.asarray(mean, np.float32).reshape(3, 1, 1), np.asarray(std, np.float32).reshape(3, 1, 1)


def to_tensor(grey: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(H, W) uint8 grey -> (3, H, W) normalised float tensor (grey replicated, as the checkpoints expect RGB)."""
    rgb = np.repeat(grey[None].astype(np.float32) / 255.0, 3, axis=0)
    return torch.from_numpy((rgb - mean) / std)


def padded(grey: np.ndarray, size: int) -> np.ndarray:
    """``grey`` padded at the bottom / right with zeros to at least ``size`` x ``size``."""
    height, width = grey.shape
    return np.pad(grey, ((0, max(0, size - height)), (0, max(0, size - width))))


def random_crop(grey: np.ndarray, boxes_xyxy: np.ndarray, size: int, on_target: bool,
                rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` crop of the original frame (padded when smaller), on a random target when ``on_target``; boxes
    clipped to it and kept when at least a pixel of them is inside (no area filter), then h-flipped half the time."""
    grey = padded(grey, size)
    height, width = grey.shape
    if on_target and len(boxes_xyxy):
        x0, y0, x1, y1 = boxes_xyxy[rng.randrange(len(boxes_xyxy))]
        left = rng.randint(int(max(0, x1 - size)), int(min(x0, width - size)))
        top = rng.randint(int(max(0, y1 - size)), int(min(y0, height - size)))
    else:
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    crop = grey[top:top + size, left:left + size]
    boxes = boxes_xyxy - np.asarray([left, top, left, top], np.float32)
    boxes = np.clip(boxes, 0, size)
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    return np.ascontiguousarray(crop), boxes.reshape(-1, 4)


def labels_of(boxes_xyxy: np.ndarray, size: int) -> dict[str, torch.Tensor]:
    """DETR-family training labels: class 0 and normalised (cx, cy, w, h) boxes."""
    b = torch.from_numpy(boxes_xyxy.astype(np.float32)) / size
    cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return {"class_labels": torch.zeros(len(b), dtype=torch.long), "boxes": cxcywh.reshape(-1, 4)}


def row_arrays(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """(grey uint8 (H, W), boxes (N, 4) xyxy original pixels) of a dataset row (COCO xywh in ``objects.bbox``)."""
    grey = np.asarray(row["image"].convert("L"))
    xywh = np.asarray(row["objects"]["bbox"], np.float32).reshape(-1, 4)
    return grey, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)


def train(model: torch.nn.Module, rows, args: Arguments, mean: np.ndarray, std: np.ndarray) -> None:
    rng = random.Random(args.seed)
    frames = [row_arrays(row) for row in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    model.train()
    start = time.time()
    for step in range(1, args.max_steps + 1):
        crops = [random_crop(*frames[rng.randrange(len(frames))], args.tile_size,
                             rng.random() < args.target_crop_probability, rng) for _ in range(args.batch_size)]
        pixel_values = torch.stack([to_tensor(crop, mean, std) for crop, _ in crops])
        loss = model(pixel_values=pixel_values, labels=[labels_of(boxes, args.tile_size) for _, boxes in crops]).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        if step == 1 or step % 50 == 0 or step == args.max_steps:
            print(f"step {step}/{args.max_steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)


def window_origins(length: int, size: int, overlap: int) -> list[int]:
    """Window starts covering ``length`` with windows of ``size`` overlapping by ``overlap`` (last one flush)."""
    if length <= size:
        return [0]
    count = math.ceil((length - overlap) / (size - overlap))
    return sorted({min(i * (size - overlap), length - size) for i in range(count)})


@torch.no_grad()
def detect_frame(model: torch.nn.Module, grey: np.ndarray, args: Arguments, mean: np.ndarray, std: np.ndarray,
                 max_detections: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, original pixels) and scores of the whole frame: windows at full resolution, merged with NMS."""
    from torchvision.ops import nms

    height, width = grey.shape
    frame = padded(grey, args.tile_size)
    origins = [(x, y) for y in window_origins(frame.shape[0], args.tile_size, args.overlap)
               for x in window_origins(frame.shape[1], args.tile_size, args.overlap)]
    pixel_values = torch.stack([to_tensor(frame[y:y + args.tile_size, x:x + args.tile_size], mean, std)
                                for x, y in origins])
    outputs = model(pixel_values=pixel_values)
    probabilities = outputs.logits.sigmoid() if "RTDetr" in type(model).__name__ else outputs.logits.softmax(-1)
    scores = probabilities[..., 0]  # the one class ("no object" of DETR is the last logit)
    cx, cy, w, h = (outputs.pred_boxes * args.tile_size).unbind(-1)
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    boxes += torch.tensor([[x, y, x, y] for x, y in origins], dtype=boxes.dtype)[:, None]
    boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = nms(boxes, scores, 0.5)[:max_detections]
    return boxes[keep].numpy(), scores[keep].numpy()


def main(argv: list[str] | None = None) -> int:
    import datasets
    from transformers import HfArgumentParser

    from bafenet.cli import main as bafenet

    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses(args=argv)
    if args.tile_size % 32:
        raise SystemExit(f"--tile-size {args.tile_size}: use a multiple of 32 (RT-DETR's stride)")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = datasets.load_dataset(args.dataset, args.dataset_config)
    model, mean, std = load_detector(args)
    train(model, data[args.train_split], args, mean, std)
    model.save_pretrained(out / "model")

    model.eval()
    predictions = []
    for row in data[args.eval_split]:
        boxes, scores = detect_frame(model, row_arrays(row)[0], args, mean, std)
        predictions.append({"image_id": row["image_id"], "boxes": np.round(boxes, 2).tolist(),
                            "scores": np.round(scores, 5).tolist()})
    (out / "predictions.json").write_text(json.dumps(predictions))
    print(f"{len(predictions)} images -> {out / 'predictions.json'}; scoring with bafenet evaluate --predictions")
    command = ["evaluate", "--predictions", str(out / "predictions.json"), "--dataset", args.dataset,
               "--config", args.dataset_config, "--split", args.eval_split, "--out", str(out / "results.json")]
    return bafenet(command)


if __name__ == "__main__":
    raise SystemExit(main())
