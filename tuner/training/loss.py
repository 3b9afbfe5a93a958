"""Next-token cross-entropy that never materialises [batch, seq, vocab] float32 logits.

The loss takes the decoder's final hidden states and its output projection and scores the
sequence chunk by chunk. Each chunk's cross-entropy keeps only its logits in the training dtype
for backward (the softmax is recomputed from them, in float32, one chunk at a time), so bf16
training stores bf16 logits and no float32 copy. ``checkpoint_chunks=True`` goes further and keeps
no logits at all, recomputing each chunk's projection in backward (less memory, one more matmul).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels aligned with tokens -> the label each position must predict (the next token)."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), ignore_index)], dim=1)


def _ce_forward(logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    as_float = logits.float()
    lse = torch.logsumexp(as_float, dim=-1)
    picked = as_float.gather(1, safe[:, None]).squeeze(1)
    return ((lse - picked) * valid).sum(), lse


def _ce_backward(logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    g = torch.exp(logits.float() - lse[:, None])  # softmax
    g = g - torch.nn.functional.one_hot(safe, logits.shape[-1]).to(g.dtype)
    return (g * (valid.to(g.dtype) * grad)[:, None]).to(logits.dtype)


_COMPILED: dict[str, Callable] = {}


def _kernel(name: str, fn: Callable, on_cuda: bool) -> Callable:
    """On CUDA, one fused compiled kernel per pass (read bf16 logits once, write once)."""
    if not on_cuda:
        return fn
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


class _CrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy of ``logits`` [N, V] against ``targets`` [N], computed in float32,
    saving the logits in their own dtype (not a float32 softmax) for backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        valid = targets != ignore_index
        safe = targets.masked_fill(~valid, 0)
        loss, lse = _kernel("forward", _ce_forward, logits.is_cuda)(logits, safe, valid)
        ctx.save_for_backward(logits, safe, valid, lse)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, safe, valid, lse = ctx.saved_tensors
        return _kernel("backward", _ce_backward, logits.is_cuda)(logits, safe, valid, lse, grad), None, None


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Summed next-token loss of ``logits`` [..., V] against ``targets`` [...] (no mean)."""
    return _CrossEntropySum.apply(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index)


def _chunk_ce_sum(project: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return cross_entropy_sum(project(hidden), targets, ignore_index)


class ChunkedCrossEntropyLoss(nn.Module):
    """Mean next-token cross-entropy over non-ignored tokens, computed in ``num_output_chunks``.

    Call as ``loss(hidden, labels, project)`` with ``hidden`` [b, s, d] from ``model.hidden(...)``,
    ``labels`` aligned with the input tokens (shifted here) and ``project`` the model's output
    projection. ``reduction="sum"`` returns the summed loss so gradient accumulation can divide by
    the token count of the whole accumulation window.
    """

    def __init__(self, num_output_chunks: int = 8, ignore_index: int = IGNORE_INDEX, reduction: str = "mean", checkpoint_chunks: bool = False) -> None:
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
