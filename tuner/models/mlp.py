"""Gated feed-forward block: ``w2(act(w1 x) * w3 x)`` (SwiGLU with silu, GeGLU with gelu-tanh), and
its sequence-tiled form for long contexts.

Tiling (``FeedForward.chunk_size``): the block is computed over chunks of ``chunk_size`` tokens, so
its ``[tokens, intermediate_dim]`` tensors (three of them, 3.5x the width on Llama 3 8B) exist for
one chunk at a time and none is kept for backward: backward recomputes each chunk from the saved
input and back-propagates it at once (as Arctic's and unsloth's TiledMLP). A layer at 300k tokens
would otherwise hold ~25 GiB of MLP intermediates in its forward or recompute.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError
from tuner.models.recompute import autocast_state, restored_autocast, restored_rng, rng_state
from tuner.quantization import project_shared


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_tanh": _gelu_tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` (HF's ``hidden_act`` names)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown MLP activation {name!r}", f"use one of {sorted(ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    """Gated MLP with torchtune's names: ``w1`` gate, ``w2`` down, ``w3`` up."""

    def __init__(self, *, gate_proj: nn.Module, down_proj: nn.Module, up_proj: nn.Module, act: str = "silu") -> None:
        super().__init__()
        self.w1 = gate_proj
        self.w2 = down_proj
        self.w3 = up_proj
        self.act_name = act
        self.act = activation(act)
        #: Tokens per chunk of the sequence-tiled computation (module docstring), or None: untiled.
        self.chunk_size: int | None = None
        # Makes a tiled output need a gradient when the input does not, so backward reaches the
        # block's trainable weights.
        self._anchor = torch.empty(0, requires_grad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunk_size is not None and x.shape[:-1].numel() > self.chunk_size:
            return _SequenceTiled.apply(self.untiled, self.chunk_size, x, self._anchor)
        return self.untiled(x)

    def untiled(self, x: torch.Tensor) -> torch.Tensor:
        """The block over all of ``x`` at once."""
        gate, up = project_shared(x, self.w1, self.w3)  # FP8 ones share x's quantization
        return self.w2(self.act(gate) * up)


class _SequenceTiled(torch.autograd.Function):
    """``fn`` over chunks of the tokens, saving only the input; backward recomputes chunk by chunk.
    ``fn`` maps ``[n, d]`` to ``[n, d]`` row by row (a token's output depends on that token only)."""

    @staticmethod
    def forward(ctx, fn: Callable[[torch.Tensor], torch.Tensor], chunk: int, x: torch.Tensor, anchor):  # noqa: ARG004
        ctx.fn, ctx.chunk = fn, chunk
        ctx.rng, ctx.autocast = rng_state(x.device), autocast_state(x.device)
        ctx.save_for_backward(x)
        flat = x.reshape(-1, x.shape[-1])
        with torch.no_grad():
            out = torch.cat([fn(part) for part in flat.split(chunk)])
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        needs_x = ctx.needs_input_grad[2]
        flat = x.detach().reshape(-1, x.shape[-1])
        grads = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = torch.empty_like(flat) if needs_x else None
        with torch.enable_grad(), restored_rng(x.device, ctx.rng), restored_autocast(x.device, ctx.autocast):
            for start in range(0, flat.shape[0], ctx.chunk):
                part = flat[start : start + ctx.chunk].detach().requires_grad_(needs_x)
                out = ctx.fn(part)
                if out.requires_grad:  # the weights' gradients accumulate into their .grad
                    torch.autograd.backward(out, grads[start : start + ctx.chunk])
                if grad_x is not None:
                    grad_x[start : start + ctx.chunk] = part.grad if part.grad is not None else 0
        return None, None, None if grad_x is None else grad_x.view_as(x), None
