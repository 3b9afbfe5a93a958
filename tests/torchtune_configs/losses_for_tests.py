"""Losses a torchtune user may name in ``loss._component_``, written here as torchtune writes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ChunkedOutputCE(torch.nn.Module):
    """torchtune 0.6.1's ``CEWithChunkedOutputLoss`` contract: ``num_output_chunks`` attribute, no
    ``reduction`` argument, called with a list of logit chunks [b, s/n, v] and labels [b, s],
    returning the mean over the labels that are not ``ignore_index``."""

    def __init__(self, num_output_chunks: int = 8, ignore_index: int = -100) -> None:
        super().__init__()
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index

    def forward(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        total = (labels != self.ignore_index).sum()
        chunks = labels.chunk(self.num_output_chunks, dim=1)
        loss = sum(
            F.cross_entropy(
                lg.float().reshape(-1, lg.size(-1)), lb.reshape(-1), reduction="sum", ignore_index=self.ignore_index
            )
            for lg, lb in zip(logits, chunks)
        )
        return loss / total


class PerTokenCE(torch.nn.Module):
    """A loss that returns one value per token: tuner needs one number."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, reduction="none")
