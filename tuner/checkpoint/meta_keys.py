"""State-dict keys between tuner and Meta's original Llama checkpoints (``consolidated.00.pth``).

Meta's layout interleaves the rotary dimensions, so besides renaming (`tuner.checkpoint.keys`) the
rows of q and k (and of their adapters' B / DoRA magnitudes) are permuted per head; tuner uses HF's
rotate-half layout. Which families have Meta checkpoints is their spec's ``meta_format``.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from tuner.checkpoint.keys import Renamer, clean_tuner_key, join, tail_to_external, tail_to_tuner
from tuner.errors import TunerError

_META_LAYER = {
    "attn.q_proj": "attention.wq",
    "attn.k_proj": "attention.wk",
    "attn.v_proj": "attention.wv",
    "attn.output_proj": "attention.wo",
    "mlp.w1": "feed_forward.w1",
    "mlp.w2": "feed_forward.w2",
    "mlp.w3": "feed_forward.w3",
    "sa_norm": "attention_norm",
    "mlp_norm": "ffn_norm",
}
_META_TOP = {"tok_embeddings": "tok_embeddings", "norm": "norm", "output": "output"}
_META_RENAMER = Renamer(_META_TOP, _META_LAYER, "layers.")
# tails whose rows follow the q/k output rows (and so are permuted with them)
_ROW_TAILS = ("weight", "bias", "lora_b.weight", "magnitude")


def _meta_to_half(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows from Meta's interleaved rotary layout to HF's rotate-half layout (per head)."""
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(n_heads * head_dim, *rest)


def _half_to_meta(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of ``_meta_to_half``."""
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(n_heads * head_dim, *rest)


def _permute_heads(
    mod: str,
    tail: str,
    value: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    fn: Callable[[torch.Tensor, int, int], torch.Tensor],
) -> torch.Tensor:
    if tail not in _ROW_TAILS:
        return value
    if mod.endswith("attn.q_proj"):
        return fn(value, num_heads, head_dim)
    if mod.endswith("attn.k_proj"):
        return fn(value, num_kv_heads, head_dim)
    return value


def meta_to_tuner(
    state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int, dim: int, head_dim: int | None = None
) -> dict[str, torch.Tensor]:
    """Convert a Meta (``consolidated.00.pth``) Llama state dict to tuner keys, permuting q/k rows."""
    return _convert(state_dict, False, num_heads, num_kv_heads, head_dim or dim // num_heads)


def tuner_to_meta(
    state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int, dim: int, head_dim: int | None = None
) -> dict[str, torch.Tensor]:
    """Convert a tuner Llama state dict to Meta's keys and interleaved rotary layout."""
    return _convert(state_dict, True, num_heads, num_kv_heads, head_dim or dim // num_heads)


def _convert(
    state_dict: Mapping[str, torch.Tensor], to_meta: bool, num_heads: int, num_kv_heads: int, head_dim: int
) -> dict[str, torch.Tensor]:
    permute, tail_out = (_half_to_meta, tail_to_external) if to_meta else (_meta_to_half, tail_to_tuner)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not to_meta and key == "rope.freqs":
            continue
        if to_meta:
            key = clean_tuner_key(key)
            hit = _META_RENAMER.to_external(key)  # (Meta module, tail, tuner module)
        else:
            back = _META_RENAMER.to_tuner(key)  # (tuner module, tail)
            hit = None if back is None else (back[0], back[1], back[0])
        if hit is None:
            what, fix = (
                ("tuner Llama state dict", "convert a Llama model")
                if to_meta
                else ("Meta Llama checkpoint", "use a Meta-format checkpoint")
            )
            raise TunerError(f"unexpected key {key!r} in a {what}", fix)
        out_mod, tail, mod = hit
        value = _permute_heads(mod, tail, value, num_heads, num_kv_heads, head_dim, permute)
        out[join(out_mod, tail_out(mod, tail))] = value
    return out
