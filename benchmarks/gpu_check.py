"""GPU check of BAFE-Net: CUDA training steps in float32 and bf16 autocast, and portability of the channel choice.

    PYTHONPATH=src python benchmarks/gpu_check.py [--device cuda] [--steps 10]

On a synthetic 512x512 batch (dark images, bright 2-8 px targets, a sky half) a full-size R18 BAFE-Net (faithful)
takes ``--steps`` AdamW updates in float32 and, from the same start, in bf16 autocast; it prints the losses (all must
be finite), the time per update, and, for the trained float32 model, how many of the exchange's channels
a bf16-autocast pass and a CPU float32 pass pick in common with the device's float32 pass (the channel scores run in
float32 under autocast, so bf16 should agree far above chance, 0.5), and the largest logit difference CPU vs device.
Runs on the CPU too (``--device cpu``, slow; ``--size 128 --steps 1`` takes about 30 s).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch


def synthetic_batch(size: int, batch: int, device: str) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, size, size, generator=g) * 5 - 100
    labels = []
    for i in range(batch):
        xy = torch.randint(8, size - 16, (20, 2), generator=g).float()
        wh = torch.randint(2, 9, (20, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        for x1, y1, x2, y2 in boxes.int().tolist():
            pixels[i, :, y1:y2, x1:x2] = 100.0
        cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, wh], dim=1) / size
        sky = torch.zeros(size, size)
        sky[: size // 2] = 1
        labels.append({"class_labels": torch.zeros(20, dtype=torch.long), "boxes": cxcywh.to(device),
                       "sky_mask": sky.to(device)})
    return pixels.to(device), labels


def train(model: torch.nn.Module, pixels, labels, steps: int, amp: bool, device: str) -> tuple[list[float], float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss = model(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if device == "cuda":
        torch.cuda.synchronize()
    return losses, (time.perf_counter() - start) / steps


def selections(model: torch.nn.Module, pixels: torch.Tensor, amp: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The exchange's channel indices of every call (levels x branches) and the class logits."""
    picked: list[torch.Tensor] = []
    exchange = model.head.exchange
    original = exchange.select

    def record(x):
        scores, index = original(x)
        picked.append(index.cpu())
        return scores, index

    exchange.select = record
    try:
        with torch.no_grad(), torch.autocast(device_type=pixels.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model.eval()(pixel_values=pixels).logits.float().cpu()
    finally:
        del exchange.select
    return picked, logits


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum((x[:, :, None] == y[:, None, :]).any(-1).float().mean().item() for x, y in zip(a, b)) / len(a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)

    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection

    torch.manual_seed(0)
    base = BafeNetForObjectDetection(BafeNetConfig(image_size=args.size, freeze_backbone_bn=False))
    pixels, labels = synthetic_batch(args.size, 2, args.device)
    report: dict[str, object] = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                                 "torch": torch.__version__}
    fp32 = copy.deepcopy(base).to(args.device)
    for name, model, amp in (("float32", fp32, False), ("bf16", copy.deepcopy(base).to(args.device), True)):
        losses, seconds = train(model, pixels, labels, args.steps, amp, args.device)
        report[name] = {"losses": [round(x, 4) for x in losses], "seconds_per_update": round(seconds, 4),
                        "finite": all(map(math.isfinite, losses))}
    picked, logits = selections(fp32, pixels, amp=False)
    picked_amp, _ = selections(fp32, pixels, amp=True)
    picked_cpu, logits_cpu = selections(copy.deepcopy(fp32).cpu(), pixels.cpu(), amp=False)
    report["channel_agreement_bf16_vs_float32"] = round(agreement(picked, picked_amp), 4)
    report["channel_agreement_cpu_vs_device_float32"] = round(agreement(picked, picked_cpu), 4)
    report["max_logit_diff_cpu_vs_device"] = float((logits - logits_cpu).abs().max())
    print(json.dumps(report, indent=2))
    ok = report["float32"]["finite"] and report["bf16"]["finite"]  # type: ignore[index]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
