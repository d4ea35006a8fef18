"""One training step (forward + loss + backward + AdamW step) of BAFE-Net R18/R50 against torchvision FCOS-R50.

    python benchmarks/bench_train_step.py [--size 512] [--batch-size 2] [--repeats 8] [--backbones resnet18 resnet50]
    python benchmarks/bench_train_step.py --recipe cpu      # the recommended CPU recipe vs the FCOS-Lite0 peer

Random weights, the same batch of 512x512 grey images with the same 12 small targets per image for every model, the
same optimiser (AdamW, lr 1e-4). The batch is prepared once, outside the timing (data loading and augmentation are
not part of the step): BAFE-Net gets ``pixel_values`` + ``labels`` (boxes and sky masks) from its image processor,
FCOS gets float images + xyxy boxes with label 0 (its one-hot loss indexes the class channel by label; its forward
still normalises the images, which costs well under 1 %).
Peer: ``fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=1, min_size=size, max_size=size)``; with
``weights_backbone=None`` torchvision builds it with trainable BatchNorm (BAFE-Net freezes its backbone BN).

Candidates run interleaved with a rotating order and the median is reported with the ratio to FCOS-R50.
Goal: BAFE-Net R18 <= 1.2x FCOS-R50.

``--recipe cpu`` compares the recipe's model (Lite0, FPN 64, 2 tower convs, zoom mode; ``cpu-tiles`` the tiles mode:
either way its training input is the recipe's ``image_size`` window, batch = the recipe's) with the equal-time benchmark's peer
(``benchmarks/fcos_peer.py``: torchvision FCOS on the same ImageNet Lite0 backbone, exp box regression) at the same
input size and batch. Goal: <= 1.2x the peer.
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


def coco_annotations(boxes: np.ndarray, batch: int) -> list[dict]:
    """The same boxes as a COCO detection annotation per image of the batch (the image processor's input)."""
    return [{"image_id": i, "annotations": [
        {"bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "category_id": 0,
         "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0} for x0, y0, x1, y1 in boxes]} for i in range(batch)]


def bafenet_step(model: torch.nn.Module, inputs: dict) -> Callable[[], float]:
    """One AdamW training step of a BAFE-Net on a prepared batch."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> float:
        outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        optimizer.step()
        return outputs.loss.item()

    return step


def torchvision_step(model: torch.nn.Module, image: np.ndarray, boxes: np.ndarray, batch: int) -> Callable[[], float]:
    """One AdamW training step of a torchvision detector (float images in 0..1, xyxy boxes, label 0)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = [torch.from_numpy(image).float().div(255.0).expand(3, -1, -1).contiguous() for _ in range(batch)]
    targets = [{"boxes": torch.from_numpy(boxes), "labels": torch.zeros(len(boxes), dtype=torch.int64)}
               for _ in range(batch)]

    def step() -> float:
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def recipe_vs_lite0_peer(args) -> None:
    """``--recipe NAME``: the recipe's model against the FCOS-Lite0 peer at the recipe's input size and batch."""
    from PIL import Image

    from bafenet.training import RECIPES
    from bench_inference import interleaved_median, recipe_model, report
    from fcos_peer import build_peer  # benchmarks/, beside this script

    recipe = RECIPES[args.recipe]
    size, batch = recipe["image_size"], recipe["per_device_train_batch_size"]
    model, processor = recipe_model(args.recipe)
    model.train()
    image, boxes = test_image(size), synthetic_targets(size)
    sky = np.zeros((size, size), dtype=np.uint8)
    sky[: size // 2] = 1
    inputs = processor(images=[Image.fromarray(image, mode="L")] * batch, annotations=coco_annotations(boxes, batch),
                       sky_masks=[sky] * batch, do_resize=False, return_tensors="pt")
    name, peer_name = f"BAFE-Net --recipe {args.recipe}", "FCOS-Lite0 peer"
    candidates = {name: bafenet_step(model, inputs),
                  peer_name: torchvision_step(build_peer(size).train(), image, boxes, batch)}
    medians = report(interleaved_median(candidates, args.repeats, args.warmup), peer_name,
                     f"training step, batch {batch}, {size}x{size}, forward + loss + backward + AdamW, "
                     f"{args.repeats} interleaved repeats")
    ratio = medians[name] / medians[peer_name]
    print(f"\ngoal --recipe {args.recipe} <= {GOAL_R18_VS_FCOS}x the FCOS-Lite0 peer: {ratio:.3f}x "
          f"({'met' if ratio <= GOAL_R18_VS_FCOS else 'MISSED'})")


def main() -> None:
    parser = timing_parser(__doc__, repeats=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--recipe", default=None, help="compare this training recipe with the FCOS-Lite0 peer")
    args = parser.parse_args()
    start(args)
    if args.recipe:
        recipe_vs_lite0_peer(args)
        return

    from PIL import Image

    size, batch = args.size, args.batch_size
    image = test_image(size)
    boxes = synthetic_targets(size)
    sky = np.zeros((size, size), dtype=np.uint8)
    sky[: size // 2] = 1
    annotations = coco_annotations(boxes, batch)
    candidates: dict[str, Callable[[], object]] = {}
    for backbone in args.backbones:
        model, processor = bafenet_model(backbone, size)
        inputs = processor(images=[Image.fromarray(image, mode="L")] * batch, annotations=annotations,
                           sky_masks=[sky] * batch, return_tensors="pt")
        candidates[f"BAFE-Net {backbone.replace('resnet', 'R')}"] = bafenet_step(model.train(), inputs)
    candidates[PEER] = torchvision_step(fcos_peer(size).train(), image, boxes, batch)
    compare_with_peer(candidates, args, f"training step, batch {batch}, {size}x{size}, forward + loss + backward + "
                      "AdamW", GOAL_R18_VS_FCOS)


if __name__ == "__main__":
    main()
