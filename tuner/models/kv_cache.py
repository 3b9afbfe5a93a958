"""Key/value cache of one attention layer, for incremental decoding."""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Keys and values ``[batch, num_kv_heads, max_seq_len, head_dim]`` written at their positions.

    Slot ``p`` of the cache holds the token at position ``p``; positions come from ``input_pos``
    (shared by the batch). Buffers are non-persistent: caches never go into checkpoints.
    """

    def __init__(
        self,
        batch_size: int,
        max_seq_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, num_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.batch_size = batch_size
        self.max_seq_len = max_seq_len

    def reset(self) -> None:
        """Zero the cache (a new sequence starts)."""
        self.k_cache.zero_()
        self.v_cache.zero_()

    def update(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` ``[b, h, s, d]`` at positions ``pos`` ``[s]``; return the whole cache."""
        b = k.shape[0]
        kc, vc = self.k_cache[:b], self.v_cache[:b]
        kc.index_copy_(2, pos, k.to(kc.dtype))
        vc.index_copy_(2, pos, v.to(vc.dtype))
        return kc, vc
