"""Qwen2.5 (0.5B ... 72B): Llama-like with q/k/v biases, rope theta 1e6; tied embeddings up to 3B."""

from __future__ import annotations

from typing import Any, Mapping

from tuner.data.tokenizers import ChatMLFormat, qwen2_5_tokenizer  # noqa: F401  (torchtune path)
from tuner.errors import ConfigError
from tuner.models.spec import FamilySpec, Size


def check_no_sliding_window(c: Mapping[str, Any]) -> None:
    """Qwen2 / Qwen3 checkpoints whose config turns the sliding window on are not supported."""
    if c.get("use_sliding_window"):
        raise ConfigError(
            f"{c.get('model_type', 'Qwen')} with use_sliding_window=true is not supported",
            "set use_sliding_window false",
        )


def _dims(
    vocab: int,
    layers: int,
    heads: int,
    kv: int,
    dim: int,
    inter: int,
    tied: bool,
    eps: float,
    max_seq_len: int = 32_768,
) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        embed_dim=dim,
        intermediate_dim=inter,
        max_seq_len=max_seq_len,
        norm_eps=eps,
        tie_word_embeddings=tied,
    )


_1_5B, _7B = (151_936, 28, 12, 2, 1536, 8960, True), (152_064, 28, 28, 4, 3584, 18944, False)
_14B, _32B, _72B = (
    (152_064, 48, 40, 8, 5120, 13824, False),
    (152_064, 64, 40, 8, 5120, 27648, False),
    (152_064, 80, 64, 8, 8192, 29568, False),
)

# The plain size builders are the ones the shipped configs use (with the Instruct checkpoints). torchtune's
# per-checkpoint names follow: a size's base and instruct checkpoints have the same weight shapes; as in
# their HF config.json files, the base ones have a 131,072-token context and, from 14B on, RMSNorm eps 1e-5,
# the instruct ones 32,768 tokens and eps 1e-6.
FAMILY = FamilySpec(
    name="qwen2_5",
    title="Qwen2.5",
    model_type="QWEN2",
    aliases=("QWEN2_5",),
    hf_model_type="qwen2",
    hf_architecture="Qwen2ForCausalLM",
    required=("vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "intermediate_dim", "max_seq_len"),
    defaults=dict(
        head_dim=None, attn_dropout=0.0, norm_eps=1e-6, rope_base=1_000_000.0, tie_word_embeddings=False, qkv_bias=True
    ),
    hf_extra={"use_sliding_window": False},
    check_hf_config=check_no_sliding_window,
    tokenizer="tuner.models.qwen2_5.qwen2_5_tokenizer",
    chat_format=ChatMLFormat,
    sizes=(
        Size(
            "0_5b",
            "Qwen2.5 0.5B Instruct",
            _dims(151_936, 24, 14, 2, 896, 4864, True, 1e-6),
            params=494_032_768,
            hf_repo="Qwen/Qwen2.5-0.5B-Instruct",
        ),
        Size(
            "1_5b",
            "Qwen2.5 1.5B Instruct",
            _dims(*_1_5B, 1e-6),
            params=1_543_714_304,
            hf_repo="Qwen/Qwen2.5-1.5B-Instruct",
        ),
        Size(
            "3b",
            "Qwen2.5 3B Instruct",
            _dims(151_936, 36, 16, 2, 2048, 11008, True, 1e-6),
            params=3_085_938_688,
            hf_repo="Qwen/Qwen2.5-3B-Instruct",
            shards=2,
        ),
        Size(
            "7b",
            "Qwen2.5 7B Instruct",
            _dims(*_7B, 1e-6),
            params=7_615_616_512,
            hf_repo="Qwen/Qwen2.5-7B-Instruct",
            shards=4,
        ),
        Size(
            "14b",
            "Qwen2.5 14B Instruct",
            _dims(*_14B, 1e-5),
            params=14_770_033_664,
            hf_repo="Qwen/Qwen2.5-14B-Instruct",
            shards=8,
        ),
        Size(
            "32b",
            "Qwen2.5 32B Instruct",
            _dims(*_32B, 1e-5),
            params=32_763_876_352,
            hf_repo="Qwen/Qwen2.5-32B-Instruct",
            shards=17,
        ),
        Size(
            "72b",
            "Qwen2.5 72B Instruct",
            _dims(*_72B, 1e-5),
            params=72_706_203_648,
            hf_repo="Qwen/Qwen2.5-72B-Instruct",
            shards=37,
        ),
        Size("1_5b_base", "Qwen2.5-1.5B", _dims(*_1_5B, 1e-6, 131_072), hf_repo="Qwen/Qwen2.5-1.5B"),
        Size("1_5b_instruct", "Qwen2.5-1.5B-Instruct", _dims(*_1_5B, 1e-6), hf_repo="Qwen/Qwen2.5-1.5B-Instruct"),
        Size("7b_base", "Qwen2.5-7B", _dims(*_7B, 1e-6, 131_072), hf_repo="Qwen/Qwen2.5-7B"),
        Size("7b_instruct", "Qwen2.5-7B-Instruct", _dims(*_7B, 1e-6), hf_repo="Qwen/Qwen2.5-7B-Instruct"),
        Size("14b_base", "Qwen2.5-14B", _dims(*_14B, 1e-5, 131_072), hf_repo="Qwen/Qwen2.5-14B"),
        Size("14b_instruct", "Qwen2.5-14B-Instruct", _dims(*_14B, 1e-6), hf_repo="Qwen/Qwen2.5-14B-Instruct"),
        Size("32b_base", "Qwen2.5-32B", _dims(*_32B, 1e-5, 131_072), hf_repo="Qwen/Qwen2.5-32B"),
        Size("32b_instruct", "Qwen2.5-32B-Instruct", _dims(*_32B, 1e-6), hf_repo="Qwen/Qwen2.5-32B-Instruct"),
        Size("72b_base", "Qwen2.5-72B", _dims(*_72B, 1e-5, 131_072), hf_repo="Qwen/Qwen2.5-72B"),
        Size("72b_instruct", "Qwen2.5-72B-Instruct", _dims(*_72B, 1e-6), hf_repo="Qwen/Qwen2.5-72B-Instruct"),
    ),
)
globals().update(FAMILY.builders)

# torchtune's names of the component builders
qwen2, lora_qwen2, qlora_qwen2 = qwen2_5, lora_qwen2_5, qlora_qwen2_5  # type: ignore[name-defined]  # noqa: F821
