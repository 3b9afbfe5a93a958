"""Gated feed-forward block: ``w2(act(w1 x) * w3 x)`` (SwiGLU with silu, GeGLU with gelu-tanh)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))
