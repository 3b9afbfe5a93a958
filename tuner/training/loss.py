"""Next-token cross-entropy that never materialises [batch, seq, vocab] float32 logits.

The loss takes the decoder's final hidden states and its output projection. It projects and
scores the sequence chunk by chunk, recomputing each chunk's logits in backward
(activation checkpointing of the projection), so the peak extra memory is one chunk's logits.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels aligned with tokens -> the label each position must predict (the next token)."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), ignore_index)], dim=1)


def _chunk_ce_sum(project: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    logits = project(hidden).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index, reduction="sum")


class ChunkedCrossEntropyLoss(nn.Module):
    """Mean next-token cross-entropy over non-ignored tokens, computed in ``num_output_chunks``.

    Call as ``loss(hidden, labels, project)`` with ``hidden`` [b, s, d] from ``model.hidden(...)``,
    ``labels`` aligned with the input tokens (shifted here) and ``project`` the model's output
    projection. ``reduction="sum"`` returns the summed loss so gradient accumulation can divide by
    the token count of the whole accumulation window.
    """

    def __init__(self, num_output_chunks: int = 8, ignore_index: int = IGNORE_INDEX, reduction: str = "mean", checkpoint_chunks: bool = True) -> None:
        super().__init__()
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.checkpoint_chunks = checkpoint_chunks

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        targets = shift_labels(labels, self.ignore_index)
        total = hidden.new_zeros((), dtype=torch.float32)
        for h, t in zip(hidden.chunk(self.num_output_chunks, dim=1), targets.chunk(self.num_output_chunks, dim=1)):
            if self.checkpoint_chunks and torch.is_grad_enabled() and h.requires_grad:
                total = total + checkpoint(_chunk_ce_sum, project, h, t, self.ignore_index, use_reentrant=False)
            else:
                total = total + _chunk_ce_sum(project, h, t, self.ignore_index)
        if self.reduction == "sum":
            return total
        return total / (targets != self.ignore_index).sum().clamp(min=1)


def count_loss_tokens(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Number of positions that contribute to the loss (after the shift)."""
    return (labels[:, 1:] != ignore_index).sum()
