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
        # Compiled layers keep autograd's norm: the compiler fuses it and plans its memory itself.
        lean = not torch.compiler.is_compiling() and (x.requires_grad or self.scale.requires_grad)
        if lean and torch.is_grad_enabled():
            return _LeanRMSNorm.apply(x, self.scale, self.eps, self.offset)
        return _rms_norm(x, self.scale, self.eps, self.offset)[0]

    def extra_repr(self) -> str:
        return f"{tuple(self.scale.shape)}, eps={self.eps}, offset={self.offset}"


def _rms_norm(
    x: torch.Tensor, scale: torch.Tensor, eps: float, offset: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The norm's output, and its float32 ``x_hat`` and ``1/rms`` (HF's operations, in HF's order)."""
    h = x.float()
    r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = h * r
    if offset:
        return (h * (1.0 + scale.float())).type_as(x), h, r
    return scale * h.to(x.dtype), h, r


class _LeanRMSNorm(torch.autograd.Function):
    """RMSNorm that saves only its input and ``1/rms`` (one float per row) for backward, and works on
    `ROWS_ELEMENTS`-sized blocks of rows.

    Autograd would keep the float32 upcast of the input and the normalised rows (24 bytes per
    element of a bf16 input, twice per decoder layer), and both directions make float32 temporaries
    the size of the whole input: at long context the largest tensors of a recomputed layer
    (~5 GiB each at 300k tokens of width 4096). Here they exist for one block of rows at a time.
    The forward is HF's operations row block by row block (the same numbers); backward recomputes
    from the input and applies the chain rule of those operations in autograd's order (the input's
    gradient is autograd's row by row; the scale's gradient sums the blocks in float32).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, eps: float, offset: bool) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(rows)
        r = torch.empty(rows.shape[0], 1, dtype=torch.float32, device=x.device)
        for block in _row_blocks(rows):
            out[block], _, r[block] = _rms_norm(rows[block], scale, eps, offset)
        ctx.save_for_backward(x, scale, r)
        ctx.offset = offset
        return out.view_as(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, scale, r = ctx.saved_tensors
        rows, grads = x.reshape(-1, x.shape[-1]), grad_out.reshape(-1, x.shape[-1])
        grad_x = torch.empty_like(rows) if ctx.needs_input_grad[0] else None
        grad_scale = torch.zeros(scale.shape, dtype=torch.float32, device=scale.device)
        for block in _row_blocks(rows):
            xf, g, rb = rows[block].float(), grads[block], r[block]
            h = xf * rb
            if ctx.offset:  # out = (h * (1 + scale)).type_as(x), in float32
                g = g.float()
                grad_scale += (g * h).sum(0)
                grad_h = g * (1.0 + scale.float())
            else:  # out = scale * h.to(x.dtype)
                grad_scale += (g * h.to(x.dtype)).sum(0, dtype=torch.float32)
                grad_h = (g * scale).float()
            if grad_x is not None:
                grad_ms = -0.5 * (grad_h * xf).sum(-1, keepdim=True) * rb.pow(3)
                grad_x[block] = (grad_h * rb + grad_ms.expand_as(h) / h.shape[-1] * (2 * xf)).to(x.dtype)
        return (
            None if grad_x is None else grad_x.view_as(x),
            grad_scale.to(scale.dtype) if ctx.needs_input_grad[1] else None,
            None,
            None,
        )


#: Elements per block of rows in `_LeanRMSNorm` (its float32 temporaries are a few such blocks).
ROWS_ELEMENTS = 2**24


def _row_blocks(rows: torch.Tensor) -> list[slice]:
    step = max(1, ROWS_ELEMENTS // rows.shape[-1])
    return [slice(a, a + step) for a in range(0, rows.shape[0], step)]
