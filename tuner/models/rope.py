"""Rotary position embeddings in HF's rotate-half layout.

HF checkpoints store q/k projections for the rotate-half layout, so they load without any
permutation; Meta's original checkpoints use the interleaved layout and are permuted on load
(see ``tuner.checkpoint.meta_keys.meta_to_tuner``).

The cos/sin tables for every position up to ``max_seq_len`` are computed once, in float32, and
kept as non-persistent buffers. After building a model on the meta device and materialising it
with ``to_empty``, call ``rope_init()`` (or ``TransformerDecoder.rope_init()``) to fill them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tuner.errors import ConfigError


def llama3_scaled_inv_freq(
    inv_freq: torch.Tensor,
    *,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    old_context_len: int,
) -> torch.Tensor:
    """Llama 3.1's frequency scaling (``rope_scaling.rope_type == "llama3"``), as in HF."""
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryPositionalEmbeddings(nn.Module):
    """cos/sin tables for rotate-half RoPE.

    Args:
        head_dim: dimension of each attention head (all of it is rotated).
        max_seq_len: number of positions to precompute.
        base: rope theta.
        scaling: None for plain RoPE, or a dict ``{"rope_type": "llama3", "factor", "low_freq_factor",
            "high_freq_factor", "original_max_position_embeddings"}`` (Llama 3.1 / 3.2).
    """

    def __init__(
        self, head_dim: int, max_seq_len: int, base: float = 10_000.0, scaling: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"rotary embeddings need an even head_dim, got {head_dim}", "use an even head_dim")
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.base = base
        self.scaling = dict(scaling) if scaling else None
        if self.scaling:
            kind = self.scaling.get("rope_type", self.scaling.get("type"))
            if kind != "llama3":
                raise ConfigError(
                    f"rope scaling type {kind!r} is not supported",
                    "use rope_scaling=None or a 'llama3' rope_scaling dict",
                )
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.rope_init()

    def inv_freq(self) -> torch.Tensor:
        """Inverse frequencies (float32, on CPU unless the default device says otherwise)."""
        idx = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float()
        inv = 1.0 / (self.base ** (idx / self.head_dim))
        if self.scaling:
            s = self.scaling
            inv = llama3_scaled_inv_freq(
                inv,
                factor=float(s["factor"]),
                low_freq_factor=float(s.get("low_freq_factor", 1.0)),
                high_freq_factor=float(s.get("high_freq_factor", 4.0)),
                old_context_len=int(s.get("original_max_position_embeddings", 8192)),
            )
        return inv

    def rope_init(self) -> None:
        """(Re)compute the cos/sin buffers on the device the buffers live on."""
        device = self.cos.device
        if device.type == "meta":
            self.cos = torch.empty(self.max_seq_len, self.head_dim, device="meta")
            self.sin = torch.empty(self.max_seq_len, self.head_dim, device="meta")
            return
        inv = self.inv_freq().to(device)
        t = torch.arange(self.max_seq_len, device=device, dtype=torch.int64).float()
        freqs = torch.outer(t, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos()
        self.sin = emb.sin()

    def forward(self, seq_len: int, input_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cos, sin), each ``[1, s, head_dim]`` (``input_pos`` None) or ``[b, s, head_dim]``."""
        if input_pos is None:
            if seq_len > self.max_seq_len:
                raise ConfigError(
                    f"sequence length {seq_len} is longer than the model's max_seq_len {self.max_seq_len}",
                    "shorten the input or build the model with a larger max_seq_len",
                )
            return self.cos[None, :seq_len], self.sin[None, :seq_len]
        if input_pos.dim() == 1:
            input_pos = input_pos[None]
        return self.cos[input_pos], self.sin[input_pos]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[-x2, x1]`` for ``x = [x1, x2]`` split in halves on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[b, h, s, d]`` with ``cos``/``sin`` ``[b|1, s, d]`` (already in x's dtype)."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin
