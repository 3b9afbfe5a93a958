"""The one generic decoder every family is built from.

``TransformerDecoder`` = token embedding -> N ``TransformerSelfAttentionLayer`` -> final norm ->
output projection. Families differ only by data given to the builder
(``tuner.models._builder.transformer_decoder``): dimensions, biases, norms, rope scaling, tied
embeddings, soft-capping, sliding windows.

Contract (docs/internals.md): ``forward(tokens, *, mask=None, input_pos=None) -> logits`` with
``forward == project(hidden(...))``; torchtune's module names; layers in ``nn.ModuleList`` ``layers``
(FSDP and activation checkpointing wrap each layer).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError, UsageError
from tuner.models.attention import (
    Mask,
    MultiHeadAttention,
    causal_block_mask,
    flex_attention,
    is_block_mask,
)
from tuner.models.rope import RotaryPositionalEmbeddings
from tuner.quantization import FP8Weight, get_fp8_copy, has_fp8_copy


class TransformerSelfAttentionLayer(nn.Module):
    """Pre-norm block: ``x + sa_scale(attn(sa_norm(x)))`` then ``x + mlp_scale(mlp(mlp_norm(x)))``.

    ``sa_scale``/``mlp_scale`` are ``nn.Identity`` except in Gemma 2, where they are the post-attention
    and post-feed-forward norms (torchtune's names for them).
    """

    def __init__(
        self,
        *,
        attn: MultiHeadAttention,
        mlp: nn.Module,
        sa_norm: nn.Module,
        mlp_norm: nn.Module,
        sa_scale: nn.Module | None = None,
        mlp_scale: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.attn, self.mlp, self.sa_norm, self.mlp_norm = attn, mlp, sa_norm, mlp_norm
        self.sa_scale = sa_scale if sa_scale is not None else nn.Identity()
        self.mlp_scale = mlp_scale if mlp_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> torch.Tensor:
        """``x`` ``[b, s, d]`` -> ``[b, s, d]``; the keyword arguments (``mask``, ``rope``, ``cache_pos``)
        are the attention's, passed on as they are."""
        x = x + self.sa_scale(self.attn(self.sa_norm(x), **attn_kwargs))
        return x + self.mlp_scale(self.mlp(self.mlp_norm(x)))


class TiedLinear(nn.Module):
    """Output projection that reuses the token-embedding matrix (tied embeddings).

    It owns no parameter (so ``output.weight`` is not in the state dict, as in torchtune and in HF
    checkpoints of tied models); ``weight`` reads the embedding's current weight at call time, so it
    follows ``.to()``, FSDP sharding and loading. The embedding is held without registering it as a
    submodule. LoRA code can recognise a tied output with ``isinstance(model.output, TiedLinear)``.
    """

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        object.__setattr__(self, "_tied_embedding", embedding)

    @property
    def weight(self) -> torch.Tensor:
        return self._tied_embedding.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._tied_embedding.weight)


class TransformerDecoder(nn.Module):
    """Decoder-only transformer.

    Args:
        tok_embeddings: ``nn.Embedding(vocab_size, embed_dim)``.
        layers: the blocks (kept as ``nn.ModuleList`` named ``layers``).
        rope: shared rotary tables (computed once per forward and handed to every layer).
        norm: final norm.
        output: output projection, or None to tie it to ``tok_embeddings`` (``TiedLinear``).
        max_seq_len: longest sequence (rope tables and default KV cache length).
        embed_scale: multiply embeddings by this (Gemma 2: ``sqrt(embed_dim)``), or None.
        final_softcap: logit soft-capping value (Gemma 2), or None.
    """

    def __init__(
        self,
        *,
        tok_embeddings: nn.Embedding,
        layers: list[TransformerSelfAttentionLayer] | nn.ModuleList,
        rope: RotaryPositionalEmbeddings,
        norm: nn.Module,
        output: nn.Module | None,
        max_seq_len: int,
        embed_scale: float | None = None,
        final_softcap: float | None = None,
    ) -> None:
        super().__init__()
        self.tok_embeddings = tok_embeddings
        self.layers = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
        self.rope = rope
        self.norm = norm
        self.output = output if output is not None else TiedLinear(tok_embeddings)
        self.max_seq_len = max_seq_len
        self.embed_scale = embed_scale
        self.final_softcap = final_softcap
        attn = self.layers[0].attn
        self.num_heads = attn.num_heads
        self.num_kv_heads = attn.num_kv_heads
        self.head_dim = attn.head_dim
        self._cache_next = 0

    @property
    def tie_word_embeddings(self) -> bool:
        return isinstance(self.output, TiedLinear)

    # ---- rope / caches -------------------------------------------------------------------------
    def rope_init(self) -> None:
        """Recompute rope tables (after materialising a meta-device model with ``to_empty``)."""
        self.rope.rope_init()

    def setup_caches(self, batch_size: int, dtype: torch.dtype, max_seq_len: int | None = None) -> None:
        """Allocate a KV cache of ``max_seq_len`` (default: the model's) positions in every layer."""
        n = max_seq_len or self.max_seq_len
        if n > self.max_seq_len:
            raise UsageError(
                f"KV cache length {n} is longer than the model's max_seq_len {self.max_seq_len}",
                "ask for fewer tokens or build the model with a larger max_seq_len",
            )
        for layer in self.layers:
            layer.attn.setup_cache(batch_size, dtype, n)
        self._cache_next = 0

    def caches_are_setup(self) -> bool:
        return self.layers[0].attn.kv_cache is not None

    def caches_are_enabled(self) -> bool:
        return self.caches_are_setup() and self.layers[0].attn.cache_enabled

    def cache_len(self) -> int | None:
        """How many positions the KV caches hold (the key length of a mask while they are on), or None."""
        cache = self.layers[0].attn.kv_cache
        return None if cache is None else cache.max_seq_len

    def reset_caches(self) -> None:
        """Empty the caches (next call starts at position 0)."""
        for layer in self.layers:
            if layer.attn.kv_cache is not None:
                layer.attn.kv_cache.reset()
        self._cache_next = 0

    def remove_caches(self) -> None:
        """Free the caches; the model goes back to training-style full-sequence calls."""
        for layer in self.layers:
            layer.attn.kv_cache = None
            layer.attn.cache_enabled = False
        self._cache_next = 0

    # ---- forward -------------------------------------------------------------------------------
    def hidden(
        self,
        tokens: torch.Tensor,
        *,
        mask: Mask = None,
        input_pos: torch.Tensor | None = None,
        cache_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-normed hidden states ``[b, s, embed_dim]``.

        ``mask``: None (causal), bool ``[b, s, s]`` (True = may attend; ``[b, s, cache_len]`` when the
        KV cache is on) or a FlexAttention BlockMask. ``input_pos``: ``[b, s]`` position ids or None
        (0..s-1; with the KV cache on, continues after the last call). ``cache_pos``: ``[s]`` the
        cache slots this call writes, shared by the batch (KV cache only; default: ``input_pos[0]``).
        Rows whose positions differ from their slots (a left-padded batch) pass both, and a mask.
        """
        b, s = tokens.shape
        h = self.tok_embeddings(tokens)
        if self.embed_scale is not None:
            h = h * torch.tensor(self.embed_scale, dtype=h.dtype)
        caching = self.caches_are_enabled()
        if not caching:
            cache_pos = None
        else:
            if cache_pos is None and input_pos is None:
                cache_pos = torch.arange(self._cache_next, self._cache_next + s, device=tokens.device)
            elif cache_pos is None:
                cache_pos = input_pos[0] if input_pos.dim() == 2 else input_pos
            if input_pos is None:
                input_pos = cache_pos[None]
            self._cache_next += s
        cos, sin = self.rope(s, input_pos)
        rope = (cos.to(h.dtype), sin.to(h.dtype))
        masks = self._layer_masks(mask, s, cache_pos, tokens.device)
        for layer in self.layers:
            h = layer(h, mask=masks[layer.attn.sliding_window], rope=rope, cache_pos=cache_pos)
        return self.norm(h)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[b, s, vocab]`` from hidden states (tied or not; soft-capped for Gemma 2)."""
        logits = self.output(hidden)
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def frozen_output_weight(self) -> torch.Tensor | FP8Weight | None:
        """W when the logits are exactly ``hidden @ W^T`` with W frozen and held whole on this
        device (no bias, no soft-capping, no adapter, not sharded), else None. The loss can then
        take the gradient of the hidden states chunk by chunk in its forward and keep no logits
        (`tuner.training.loss`). With LoRA's ``fp8_output`` it is W's FP8 copy (an `FP8Weight`),
        which the loss multiplies by in FP8."""
        out = self.output
        plain = isinstance(out, TiedLinear) or (type(out) is nn.Linear and out.bias is None)
        if not plain or self.final_softcap is not None:
            return None
        weight = out.weight
        sharded = type(weight) not in (torch.Tensor, nn.Parameter)  # e.g. a DTensor shard
        if sharded and has_fp8_copy(out):
            raise ConfigError(
                "fp8_output: True needs the output projection whole on each device; FSDP2 shards it",
                fix="drop model.fp8_output with the distributed recipes (it works with the single-device ones)",
            )
        if weight.requires_grad or sharded:
            return None
        return get_fp8_copy(out) if has_fp8_copy(out) else weight

    def forward(self, tokens: torch.Tensor, **hidden_kwargs: Any) -> torch.Tensor:
        """Logits ``[b, s, vocab]``; the keyword arguments (``mask``, ``input_pos``, ``cache_pos``) are
        ``hidden``'s, passed on as they are."""
        return self.project(self.hidden(tokens, **hidden_kwargs))

    def _layer_masks(self, mask, s: int, cache_pos: torch.Tensor | None, device) -> dict:
        """One mask per distinct sliding window among the layers (key None = full attention)."""
        windows = {layer.attn.sliding_window for layer in self.layers}
        if is_block_mask(mask):
            return {w: mask for w in windows}
        if mask is not None and mask.dtype != torch.bool:
            raise UsageError(
                f"attention mask must be a bool tensor (True = may attend), got {mask.dtype}",
                "pass mask.bool() or a FlexAttention BlockMask",
            )
        if mask is not None:
            kv_len = self.cache_len() if cache_pos is not None else s
            if mask.dim() != 3 or tuple(mask.shape[1:]) != (s, kv_len):
                raise UsageError(
                    f"attention mask has shape {tuple(mask.shape)}, expected [batch, {s}, {kv_len}]",
                    "pass a bool mask [b, s, s] (or [b, s, cache_len] while the KV cache is on)",
                )
        if mask is None and cache_pos is None and self._flex_on_gpu(device):
            # GPU: soft-capped layers, and sliding windows shorter than the sequence, run on fused
            # FlexAttention with a cached BlockMask; the other layers keep the flash path (None)
            softcap = self.layers[0].attn.softcap is not None
            return {
                w: causal_block_mask(s, w, str(device)) if softcap or (w is not None and s > w) else None
                for w in windows
            }
        if cache_pos is not None:
            kv_len = self.cache_len()
            k_idx = torch.arange(kv_len, device=device)
            dist = cache_pos[:, None] - k_idx[None, :]
            base = mask if mask is not None else (dist >= 0)[None]
            return {w: base if w is None else base & (dist < w)[None] for w in windows}
        out = {}
        for w in windows:
            if w is None or s <= w:
                out[w] = mask
            else:
                idx = torch.arange(s, device=device)
                dist = idx[:, None] - idx[None, :]
                band = ((dist >= 0) & (dist < w))[None]
                out[w] = band if mask is None else mask & band
        return out

    def _flex_on_gpu(self, device) -> bool:
        """Whether FlexAttention is available for CUDA tensors."""
        return flex_attention is not None and torch.device(device).type == "cuda"
