"""Qwen3 (0.6B, 1.7B, 4B, 8B): Qwen2.5's layout without q/k/v biases, with an RMSNorm over each
head's queries and keys before RoPE (``attn.q_norm`` / ``attn.k_norm``); tied embeddings up to 4B."""

from __future__ import annotations

from typing import Any, Mapping

from tuner.data.tokenizers import Qwen3Format, qwen3_tokenizer  # noqa: F401  (torchtune path: tuner.models.qwen3.*)
from tuner.errors import ConfigError
from tuner.models.qwen2_5 import check_no_sliding_window
from tuner.models.spec import FamilySpec, Size


def _check_hf_config(c: Mapping[str, Any]) -> None:
    check_no_sliding_window(c)
    if c.get("attention_bias"):
        raise ConfigError(
            "Qwen3 with attention_bias=true is not supported", "use a checkpoint without attention biases"
        )


def _dims(layers: int, heads: int, dim: int, inter: int, tied: bool, max_seq_len: int) -> dict[str, Any]:
    return dict(
        vocab_size=151_936,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=8,
        embed_dim=dim,
        intermediate_dim=inter,
        max_seq_len=max_seq_len,
        head_dim=128,
        tie_word_embeddings=tied,
    )


# released config.json values; a size's base and post-trained checkpoints differ only in context length
_0_6B, _1_7B, _4B, _8B = (
    (28, 16, 1024, 3072, True),
    (28, 16, 2048, 6144, True),
    (36, 32, 2560, 9728, True),
    (36, 32, 4096, 12288, False),
)

FAMILY = FamilySpec(
    name="qwen3",
    title="Qwen3",
    model_type="QWEN3",
    hf_model_type="qwen3",
    hf_architecture="Qwen3ForCausalLM",
    required=("vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "intermediate_dim", "max_seq_len"),
    defaults=dict(head_dim=None, attn_dropout=0.0, norm_eps=1e-6, rope_base=1_000_000.0, tie_word_embeddings=False),
    decoder=dict(qk_norm=True),
    hf_extra={"use_sliding_window": False},
    check_hf_config=_check_hf_config,
    tokenizer="tuner.models.qwen3.qwen3_tokenizer",
    chat_format=Qwen3Format,
    sizes=(
        Size("0_6b_base", "Qwen3 0.6B Base", _dims(*_0_6B, 32_768), params=596_049_920, hf_repo="Qwen/Qwen3-0.6B-Base"),
        Size("0_6b_instruct", "Qwen3 0.6B", _dims(*_0_6B, 40_960), params=596_049_920, hf_repo="Qwen/Qwen3-0.6B"),
        Size(
            "1_7b_base",
            "Qwen3 1.7B Base",
            _dims(*_1_7B, 32_768),
            params=1_720_574_976,
            hf_repo="Qwen/Qwen3-1.7B-Base",
            shards=2,
        ),
        Size(
            "1_7b_instruct",
            "Qwen3 1.7B",
            _dims(*_1_7B, 40_960),
            params=1_720_574_976,
            hf_repo="Qwen/Qwen3-1.7B",
            shards=2,
        ),
        Size(
            "4b_base",
            "Qwen3 4B Base",
            _dims(*_4B, 32_768),
            params=4_022_468_096,
            hf_repo="Qwen/Qwen3-4B-Base",
            shards=3,
        ),
        Size("4b_instruct", "Qwen3 4B", _dims(*_4B, 40_960), params=4_022_468_096, hf_repo="Qwen/Qwen3-4B", shards=3),
        Size(
            "8b_base",
            "Qwen3 8B Base",
            _dims(*_8B, 32_768),
            params=8_190_735_360,
            hf_repo="Qwen/Qwen3-8B-Base",
            shards=5,
        ),
        Size("8b_instruct", "Qwen3 8B", _dims(*_8B, 40_960), params=8_190_735_360, hf_repo="Qwen/Qwen3-8B", shards=5),
    ),
)
globals().update(FAMILY.builders)
