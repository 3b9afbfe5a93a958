"""RMSNorm, in Llama's form and in Gemma's ``(1 + w)`` form.

Both normalise in float32 (as HF transformers does) so that bf16 training keeps the same numerics
as the reference implementation. The learnable parameter is named ``scale`` (torchtune's name);
the key converters map it to HF's ``weight``.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square layer norm.

    Args:
        dim: size of the last dimension.
        eps: added to the mean square before the reciprocal square root.
        offset: when True (Gemma), the output is ``x_hat * (1 + scale)`` computed in float32 and
            ``scale`` starts at 0; otherwise (Llama) ``scale * x_hat`` with ``x_hat`` cast back to
            the input dtype first, and ``scale`` starts at 1.
    """

    def __init__(self, dim: int, eps: float = 1e-6, *, offset: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset
        self.scale = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:
            return (h * (1.0 + self.scale.float())).type_as(x)
        return self.scale * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.scale.shape)}, eps={self.eps}, offset={self.offset}"
