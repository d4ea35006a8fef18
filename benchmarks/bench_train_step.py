"""One training step (forward + loss + backward + AdamW step) of BAFE-Net R18/R50 against torchvision FCOS-R50.

    python benchmarks/bench_train_step.py [--size 512] [--batch-size 2] [--repeats 8] [--backbones resnet18 resnet50]

Random weights, the same batch of 512x512 grey images with the same 12 small targets per image for every model, the
same optimiser (AdamW, lr 1e-4). The batch is prepared once, outside the timing (data loading and augmentation are
not part of the step): BAFE-Net gets ``pixel_values`` + ``labels`` (boxes and sky masks) from its image processor,
FCOS gets float images + xyxy boxes with label 0 (its one-hot loss indexes the class channel by label; its forward
still normalises the images, which costs well under 1 %).
Peer: ``fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=1, min_size=size, max_size=size)``; with
``weights_backbone=None`` torchvision builds it with trainable BatchNorm (BAFE-Net freezes its backbone BN).

Candidates run interleaved with a rotating order and the median is reported with the ratio to FCOS-R50.
Goal: BAFE-Net R18 <= 1.2x FCOS-R50.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from bench_inference import PEER, bafenet_model, compare_with_peer, fcos_peer, start, test_image, timing_parser

GOAL_R18_VS_FCOS = 1.2


def synthetic_targets(size: int, num_targets: int = 12, seed: int = 0) -> np.ndarray:
    """(N, 4) xyxy boxes of 3-8 px, clustered in the upper half (where the sky is), in pixels of a size x size image."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([0.2 * size, 0.1 * size], [0.8 * size, 0.45 * size], (num_targets, 2))
    half = rng.uniform(1.5, 4.0, (num_targets, 2))
    return np.concatenate([centres - half, centres + half], axis=1).round().astype(np.float32)


def main() -> None:
    parser = timing_parser(__doc__, repeats=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    args = parser.parse_args()
    start(args)

    from PIL import Image

    size, batch = args.size, args.batch_size
    image = test_image(size)
    boxes = synthetic_targets(size)
    sky = np.zeros((size, size), dtype=np.uint8)
    sky[: size // 2] = 1
    annotations = [
        {"image_id": i, "annotations": [
            {"bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "category_id": 0,
             "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0} for x0, y0, x1, y1 in boxes]}
        for i in range(batch)
    ]
    candidates: dict[str, Callable[[], object]] = {}
    for backbone in args.backbones:
        model, processor = bafenet_model(backbone, size)
        model.train()
        inputs = processor(images=[Image.fromarray(image, mode="L")] * batch, annotations=annotations,
                           sky_masks=[sky] * batch, return_tensors="pt")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def bafenet_step(model=model, inputs=inputs, optimizer=optimizer):
            outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            optimizer.step()
            return outputs.loss.item()

        candidates[f"BAFE-Net {backbone.replace('resnet', 'R')}"] = bafenet_step

    peer = fcos_peer(size).train()
    peer_optimizer = torch.optim.AdamW([p for p in peer.parameters() if p.requires_grad], lr=1e-4)
    peer_images = [torch.from_numpy(image).float().div(255.0).expand(3, -1, -1).contiguous() for _ in range(batch)]
    peer_targets = [{"boxes": torch.from_numpy(boxes), "labels": torch.zeros(len(boxes), dtype=torch.int64)}
                    for _ in range(batch)]

    def fcos_step():
        losses = peer(peer_images, peer_targets)
        loss = sum(losses.values())
        peer_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        peer_optimizer.step()
        return loss.item()

    candidates[PEER] = fcos_step
    compare_with_peer(candidates, args, f"training step, batch {batch}, {size}x{size}, forward + loss + backward + "
                      "AdamW", GOAL_R18_VS_FCOS)


if __name__ == "__main__":
    main()
