"""Reproducible, resumable data order: which sample indices each rank sees in each epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils.data import Sampler


@dataclass(eq=False)
class ResumableSampler(Sampler[list[int]]):
    """Batches of indices, shuffled per epoch from ``seed + epoch``, sharded across ranks.

    ``set_epoch(epoch, skip_batches)`` starts the epoch after ``skip_batches`` batches, so a resumed
    run sees exactly the batches the interrupted run had not seen yet. The last incomplete batch
    is dropped so that every rank runs the same number of steps.
    """

    dataset_len: int
    batch_size: int
    shuffle: bool = True
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    epoch: int = field(default=0, init=False)
    skip_batches: int = field(default=0, init=False)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip_batches = skip_batches

    def _epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.dataset_len))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.dataset_len, generator=g).tolist()

    def batches_per_epoch(self) -> int:
        return self.dataset_len // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.skip_batches)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._epoch_order()
        per_step = self.batch_size * self.world_size
        for b in range(self.skip_batches, self.batches_per_epoch()):
            block = order[b * per_step : (b + 1) * per_step]
            yield block[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
