"""Phi-3-mini (4k): Llama architecture with fused qkv / gate-up projections in its checkpoints
(split on load, fused on save by ``tuner.checkpoint.hf_keys``), plain RoPE, and a 2047-token sliding
window as its HF config declares (only matters for sequences longer than 2047)."""

from __future__ import annotations

from typing import Any, Mapping

from tuner.data.tokenizers import Phi3Format, phi3_mini_tokenizer  # noqa: F401  (torchtune path: tuner.models.phi3.*)
from tuner.errors import ConfigError
from tuner.models.spec import FamilySpec, Size


def _check_hf_config(c: Mapping[str, Any]) -> None:
    if c.get("partial_rotary_factor", (c.get("rope_parameters") or {}).get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConfigError("Phi-3 with partial_rotary_factor != 1 is not supported", "use Phi-3-mini")


# The released sizes, one a row (a table: ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    ("name", "title", "params", "hf_repo", "shards"),
    ("mini", "Phi-3 mini 4k Instruct", 3_821_079_552, "microsoft/Phi-3-mini-4k-instruct", 2),
    vocab_size=32_064, num_layers=32, num_heads=32, num_kv_heads=32, embed_dim=3072, intermediate_dim=8192,
    max_seq_len=4096, sliding_window=2047,
)
# fmt: on

FAMILY = FamilySpec(
    name="phi3",
    title="Phi-3",
    model_type="PHI3_MINI",
    aliases=("PHI3",),
    hf_model_type="phi3",
    defaults=dict(attn_dropout=0.0, norm_eps=1e-5, rope_base=10_000.0, sliding_window=None, tie_word_embeddings=False),
    hf_fused={
        "attn.q_proj": "self_attn.qkv_proj",
        "attn.k_proj": "self_attn.qkv_proj",
        "attn.v_proj": "self_attn.qkv_proj",
        "mlp.w1": "mlp.gate_up_proj",
        "mlp.w3": "mlp.gate_up_proj",
    },
    hf_extra={"original_max_position_embeddings": lambda config: config["max_position_embeddings"]},
    check_hf_config=_check_hf_config,
    tokenizer="tuner.models.phi3.phi3_mini_tokenizer",
    chat_format=Phi3Format,
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
