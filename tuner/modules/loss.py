"""torchtune's ``torchtune.modules.loss`` names.

`CEWithChunkedOutputLoss` is tuner's `ChunkedCrossEntropyLoss` (so a config naming it keeps the
trainer's memory-lean path, which takes the hidden states and the output projection) that also
accepts torchtune's call ``loss(logit_chunks, labels)``: a list of logits chunks ``[b, s/n, V]``
along the sequence and labels already aligned with them (torchtune's recipes shift the labels
before calling). That call returns the mean over non-ignored labels (the sum with
``reduction="sum"``). Knowledge-distillation losses are not provided.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tuner.errors import unsupported
from tuner.training.loss import ChunkedCrossEntropyLoss, cross_entropy_sum


class CEWithChunkedOutputLoss(ChunkedCrossEntropyLoss):
    """`ChunkedCrossEntropyLoss`, callable as tuner's ``(hidden, labels, project, ...)`` or as
    torchtune's ``(logit_chunks, labels)`` (see the module docstring)."""

    def forward(self, first: Any, labels: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(first, (list, tuple)):
            return self.chunked_logits_loss(first, labels)
        return super().forward(first, labels, *args, **kwargs)

    def chunked_logits_loss(self, logit_chunks: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of already computed logits chunks against labels aligned with them."""
        label_chunks = labels.chunk(len(logit_chunks), dim=1)
        total = sum(
            cross_entropy_sum(logits, target, self.ignore_index) for logits, target in zip(logit_chunks, label_chunks)
        )
        if self.reduction == "sum":
            return total
        return total / (labels != self.ignore_index).sum().clamp(min=1)


_KD = ("knowledge distillation is outside tuner's scope", "use CEWithChunkedOutputLoss")
ForwardKLLoss = unsupported("tuner.modules.loss.ForwardKLLoss", *_KD)
ForwardKLWithChunkedOutputLoss = unsupported("tuner.modules.loss.ForwardKLWithChunkedOutputLoss", *_KD)
ReverseKLLoss = unsupported("tuner.modules.loss.ReverseKLLoss", *_KD)
ReverseKLWithChunkedOutputLoss = unsupported("tuner.modules.loss.ReverseKLWithChunkedOutputLoss", *_KD)
SymmetricKLLoss = unsupported("tuner.modules.loss.SymmetricKLLoss", *_KD)
SymmetricKLWithChunkedOutputLoss = unsupported("tuner.modules.loss.SymmetricKLWithChunkedOutputLoss", *_KD)
