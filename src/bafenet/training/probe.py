"""The DDP gradient probe: which trainable parameters get no gradient in this configuration (frozen before DDP wraps
the model, so it runs without the unused-parameter search)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _probe_batch(processor: Any, image_size: int) -> dict[str, Any]:
    """One synthetic batch with targets of every FCOS level's size and a half-sky mask (for the gradient probe)."""
    generator = np.random.default_rng(0)
    image = generator.integers(0, 255, size=(image_size, image_size, 3), dtype=np.uint8)
    sizes = [3, 6, image_size // 8, image_size // 4, image_size // 2]
    annotations = [{"bbox": [4.0 + i * 2, 4.0 + i * 2, float(s), float(s)], "category_id": 0, "area": float(s * s),
                    "iscrowd": 0} for i, s in enumerate(sizes)]
    sky = np.zeros((image_size, image_size), np.uint8)
    sky[: image_size // 2] = 1
    return processor(images=[image], annotations=[{"image_id": 0, "annotations": annotations}], sky_masks=[sky],
                     do_resize=False, return_tensors="pt")


def parameters_without_gradient(model: torch.nn.Module, processor: Any, image_size: int) -> list[str]:
    """Names of trainable parameters that receive no gradient from the loss (one forward/backward on a probe batch).

    In ``mode="faithful"`` these are the channel scorer's (the original selects channels by hard top-K, so its
    scoring layer never gets a gradient). The model's weights are left untouched.
    """
    batch = _probe_batch(processor, image_size)
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return missing
