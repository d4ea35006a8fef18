"""Training data: the epoch sampler, the augmented training set, the ground-truth boxes of a split (the evaluation
loader is `bafenet.inference.inference_loader`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

from bafenet.data.transforms import TrainTransform, row_boxes, sample_from_row


class EpochShuffleSampler(Sampler[int]):
    """Yields ``epoch * n + perm_epoch[i]``: a fresh permutation each epoch, a pure function of (seed, epoch).

    The key tells :class:`AugmentedTrainDataset` both the sample and its augmentation seed, so the batches of an epoch
    do not depend on process, worker or RNG state (exact resume, reproducible across ``num_workers``).
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        permutation = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter((self.epoch * self.num_samples + permutation).tolist())


class AugmentedTrainDataset(Dataset):
    """The training split repeated ``repeats`` times, each item resized, flipped and BAG-CP'ed with a random source.

    Indexed by the keys of :class:`EpochShuffleSampler`; the item's RNG is seeded with (seed, key).
    """

    def __init__(self, rows: Any, transform: TrainTransform, repeats: int, seed: int) -> None:
        if len(rows) == 0:
            raise ValueError("the training split is empty")
        self.rows, self.transform, self.repeats, self.seed = rows, transform, repeats, seed

    def __len__(self) -> int:
        return len(self.rows) * self.repeats

    def __getitem__(self, key: int):
        rng = np.random.default_rng([self.seed, 1, int(key)])
        index = (int(key) % len(self)) % len(self.rows)
        source = None
        if self.transform.copy_paste is not None:
            source = sample_from_row(self.rows[int(rng.integers(len(self.rows)))])
        return self.transform(sample_from_row(self.rows[index]), source, rng)


def ground_truths(rows: Any) -> list[dict[str, Any]]:
    """The split's boxes as xyxy in original pixels (the dataset's convention: 0-based, exclusive max)."""
    out = []
    for row in rows.select_columns(["image_id", "objects"]):
        out.append({"image_id": row["image_id"], "boxes": row_boxes(row)})
    return out
