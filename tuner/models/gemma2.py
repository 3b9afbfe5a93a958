"""Gemma 2 (2B, 9B, 27B).

Differences from Llama, all data for the generic decoder: ``(1 + w)`` RMSNorms, extra post-attention
and post-MLP norms (``sa_scale``/``mlp_scale``), embeddings scaled by ``sqrt(embed_dim)``, GeGLU
(gelu-tanh) MLP, softmax scale ``query_pre_attn_scalar ** -0.5``, attention-logit soft-capping (50)
and final-logit soft-capping (30), a 4096-token sliding window on even layers (0, 2, ...), tied
embeddings.
"""

from __future__ import annotations

from typing import Any, Mapping

from tuner.data.tokenizers import Gemma2Format, gemma2_tokenizer
from tuner.errors import ConfigError
from tuner.models.spec import FamilySpec, Size

gemma_tokenizer = gemma2_tokenizer  # torchtune's Gemma 2 configs name tuner.models.gemma.gemma_tokenizer, also here


def _scale_and_query_scalar(kw: dict[str, Any]) -> dict[str, Any]:
    """Embeddings scaled by sqrt(embed_dim); ``query_pre_attn_scalar`` defaults to ``head_dim``."""
    kw["query_pre_attn_scalar"] = kw.get("query_pre_attn_scalar") or kw["head_dim"]
    kw["embed_scale"] = kw["embed_dim"] ** 0.5
    return kw


def _check_hf_config(c: Mapping[str, Any]) -> None:
    layer_types = c.get("layer_types")
    expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(int(c["num_hidden_layers"]))]
    if layer_types is not None and list(layer_types) != expected:
        raise ConfigError(
            "Gemma 2 config with a non-alternating layer_types is not supported",
            "use sliding attention on even layers, as released Gemma 2 models do",
        )
    if not c.get("tie_word_embeddings", True):
        raise ConfigError("Gemma 2 with untied embeddings is not supported", "set tie_word_embeddings true")


# The released sizes, one a row (a table: ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    ("name", "title", "num_layers", "num_heads", "head_dim", "num_kv_heads", "embed_dim", "intermediate_dim",
     "query_pre_attn_scalar", "params", "hf_repo", "shards"),
    ("2b",  "Gemma 2 2B",  26,  8, 256,  4, 2304,  9216, 256,  2_614_341_888, "google/gemma-2-2b",   2),
    ("9b",  "Gemma 2 9B",  42, 16, 256,  8, 3584, 14336, 256,  9_241_705_984, "google/gemma-2-9b",   4),
    ("27b", "Gemma 2 27B", 46, 32, 128, 16, 4608, 36864, 144, 27_227_128_320, "google/gemma-2-27b", 12),
    vocab_size=256_000, max_seq_len=8192,
)
# fmt: on

FAMILY = FamilySpec(
    name="gemma2",
    title="Gemma 2",
    hf_model_type="gemma2",
    required=(
        "vocab_size",
        "num_layers",
        "num_heads",
        "head_dim",
        "num_kv_heads",
        "embed_dim",
        "intermediate_dim",
        "max_seq_len",
    ),
    defaults=dict(
        attn_dropout=0.0,
        norm_eps=1e-6,
        rope_base=10_000.0,
        hidden_capping_value=50.0,
        final_capping_value=30.0,
        sliding_window_size=4096,
        query_pre_attn_scalar=None,
    ),
    renames=dict(
        hidden_capping_value="attn_softcap", final_capping_value="final_softcap", sliding_window_size="sliding_window"
    ),
    derive=(_scale_and_query_scalar,),
    decoder=dict(
        gemma_norm=True,
        post_norms=True,
        activation="gelu_pytorch_tanh",
        sliding_window_pattern="even",
        tie_word_embeddings=True,
    ),
    hf_layer_keys={
        "sa_scale": "post_attention_layernorm",
        "mlp_norm": "pre_feedforward_layernorm",
        "mlp_scale": "post_feedforward_layernorm",
    },
    hf_extra={"hidden_activation": "gelu_pytorch_tanh"},
    check_hf_config=_check_hf_config,
    tokenizer="tuner.models.gemma2.gemma2_tokenizer",
    chat_format=Gemma2Format,
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
