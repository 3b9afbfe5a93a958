"""Grouped-query self-attention on ``scaled_dot_product_attention`` (or FlexAttention).

Paths, chosen per call:

* ``mask`` None, no cache, no soft-capping: SDPA with ``is_causal=True`` and ``enable_gqa=True`` —
  the flash-attention path on GPU, with no mask tensor and no copy of k/v.
* ``mask`` a bool tensor ``[b, q, kv]`` (True = may attend): SDPA with that mask and ``enable_gqa``
  (as fast as repeating k/v heads, with less memory: docs/benchmarks.md).
* ``mask`` a FlexAttention ``BlockMask``: ``flex_attention`` (compiled on CUDA); soft-capping and
  the sliding window go in as a ``score_mod`` (the BlockMask carries causality and documents).
* soft-capping (Gemma 2) with a dense mask, or on CPU: eager attention, as HF computes it.

On GPU with no mask, the decoder hands soft-capped layers, and sliding-window layers whose window is
shorter than the sequence, a cached causal(+window) BlockMask, so they run on fused FlexAttention
rather than on materialised scores or a dense band mask.

The decoder builds the dense masks (causal, sliding-window, cache) once per forward and passes
each layer the one it needs, so this module only consumes them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError
from tuner.models.kv_cache import KVCache
from tuner.models.rope import apply_rope
from tuner.quantization import project_shared

try:  # FlexAttention exists from torch 2.5
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old torch
    BlockMask = None  # type: ignore[assignment,misc]
    create_block_mask = None  # type: ignore[assignment]
    flex_attention = None  # type: ignore[assignment]

#: What a ``mask`` argument may be: None (causal), a bool tensor (True = may attend) or a FlexAttention BlockMask.
Mask = torch.Tensor | object | None
#: RoPE's (cos, sin) tables for the positions of one call.
RopeTables = tuple[torch.Tensor, torch.Tensor]

_compiled_flex = None


def _flex(q, k, v, **kwargs):
    """flex_attention, compiled once on CUDA (eager flex attention is slow and memory hungry)."""
    global _compiled_flex
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)  # static first, dynamic after a new shape
        return _compiled_flex(q, k, v, **kwargs)
    return flex_attention(q, k, v, **kwargs)


@functools.lru_cache(maxsize=16)
def causal_block_mask(seq_len: int, window: int | None, device: str) -> "BlockMask":
    """Cached causal (and sliding-window) BlockMask, for soft-capped attention on GPU."""

    def causal(b, h, q_idx, kv_idx):
        keep = q_idx >= kv_idx
        if window is not None:
            keep = keep & (q_idx - kv_idx < window)
        return keep

    return create_block_mask(causal, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device=device)


def is_block_mask(mask: object) -> bool:
    """True when ``mask`` is a FlexAttention BlockMask."""
    return BlockMask is not None and isinstance(mask, BlockMask)


class MultiHeadAttention(nn.Module):
    """Self-attention with grouped-query heads, rotary embeddings and an optional KV cache.

    Args:
        embed_dim: model width.
        num_heads / num_kv_heads / head_dim: query heads, key/value heads (divides num_heads),
            per-head width.
        q_proj, k_proj, v_proj, output_proj: the projections (``nn.Linear`` or LoRA wrappers).
        scale: softmax scale; default ``head_dim ** -0.5`` (Gemma 2: ``query_pre_attn_scalar ** -0.5``).
        softcap: attention-logit soft-capping value (Gemma 2), or None.
        sliding_window: this layer attends to at most the last ``sliding_window`` positions
            (``q - k < sliding_window``), or None. The decoder turns it into a mask.
        attn_dropout: dropout on attention probabilities while training.
        q_norm, k_norm: norms over each head's query / key (``head_dim``), applied before the rotary
            embedding (Qwen3's q/k RMSNorm), or None.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        q_proj: nn.Module,
        k_proj: nn.Module,
        v_proj: nn.Module,
        output_proj: nn.Module,
        scale: float | None = None,
        softcap: float | None = None,
        sliding_window: int | None = None,
        attn_dropout: float = 0.0,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ConfigError(
                f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})",
                "fix the model dimensions",
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.q_proj = q_proj
        self.k_proj = k_proj
        self.v_proj = v_proj
        self.output_proj = output_proj
        self.q_norm = q_norm
        self.k_norm = k_norm
        self.scale = scale if scale is not None else head_dim**-0.5
        self.softcap = softcap
        self.sliding_window = sliding_window
        self.attn_dropout = attn_dropout
        self.kv_cache: KVCache | None = None
        self.cache_enabled = False

    def setup_cache(self, batch_size: int, dtype: torch.dtype, max_seq_len: int) -> None:
        """Allocate this layer's KV cache on the device of its weights."""
        device = next(self.parameters()).device
        self.kv_cache = KVCache(batch_size, max_seq_len, self.num_kv_heads, self.head_dim, dtype, device)
        self.cache_enabled = True

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: Mask = None,
        rope: RopeTables | None = None,
        cache_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``[b, s, d]`` -> ``[b, s, d]``.

        ``mask``: None (causal), bool ``[b|1, s, kv]`` or a BlockMask. ``rope``: (cos, sin) in x's
        dtype. ``cache_pos``: ``[s]`` cache slots to write when the KV cache is on.
        """
        b, s, _ = x.shape
        q, k, v = project_shared(x, self.q_proj, self.k_proj, self.v_proj)  # FP8 ones share x's quantization
        q = q.view(b, s, self.num_heads, self.head_dim)
        k = k.view(b, s, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
        if self.cache_enabled and self.kv_cache is not None:
            if cache_pos is None:
                raise RuntimeError("the KV cache is on but no cache positions were given")
            k, v = self.kv_cache.update(cache_pos, k, v)
        dropout = self.attn_dropout if self.training else 0.0
        out = self._attend(q, k, v, mask, dropout)
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
        return self.output_proj(out)

    def _attend(self, q, k, v, mask, dropout: float) -> torch.Tensor:
        if is_block_mask(mask):
            return _flex(
                q,
                k,
                v,
                block_mask=mask,
                score_mod=self._score_mod(),
                scale=self.scale,
                enable_gqa=self.num_kv_heads != self.num_heads,
            )
        groups = self.num_heads // self.num_kv_heads
        if self.softcap is not None:
            return self._eager(q, k, v, mask, dropout, groups)
        if mask is None:
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=dropout, scale=self.scale, enable_gqa=groups > 1
            )
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None], dropout_p=dropout, scale=self.scale, enable_gqa=groups > 1
        )

    def _score_mod(self):
        """FlexAttention score_mod for soft-capping and the sliding window (None when neither)."""
        cap, window = self.softcap, self.sliding_window
        if cap is None and window is None:
            return None

        def score_mod(score, b, h, q_idx, kv_idx):
            if cap is not None:
                score = torch.tanh(score / cap) * cap
            if window is not None:
                score = torch.where(q_idx - kv_idx < window, score, -float("inf"))
            return score

        return score_mod

    def _eager(self, q, k, v, mask, dropout: float, groups: int) -> torch.Tensor:
        """Attention with logit soft-capping, computed as HF's eager Gemma 2 attention."""
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale
        scores = torch.tanh(scores / self.softcap) * self.softcap
        if mask is None:
            sq, sk = q.shape[-2], k.shape[-2]
            mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)[None]
        scores = scores.masked_fill(~mask[:, None], torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        probs = F.dropout(probs, p=dropout, training=dropout > 0)
        return torch.matmul(probs, v)
