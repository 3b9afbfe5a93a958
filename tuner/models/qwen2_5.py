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


# The plain size builders are the ones the shipped configs use (with the Instruct checkpoints), one a row (a table:
# ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    ("name", "title", "vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "intermediate_dim",
     "norm_eps", "tie_word_embeddings", "params", "hf_repo", "shards"),
    ("0_5b", "Qwen2.5 0.5B Instruct", 151_936, 24, 14, 2,  896,  4864, 1e-6,  True,    494_032_768, "Qwen/Qwen2.5-0.5B-Instruct",  1),
    ("1_5b", "Qwen2.5 1.5B Instruct", 151_936, 28, 12, 2, 1536,  8960, 1e-6,  True,  1_543_714_304, "Qwen/Qwen2.5-1.5B-Instruct",  1),
    ("3b",   "Qwen2.5 3B Instruct",   151_936, 36, 16, 2, 2048, 11008, 1e-6,  True,  3_085_938_688, "Qwen/Qwen2.5-3B-Instruct",    2),
    ("7b",   "Qwen2.5 7B Instruct",   152_064, 28, 28, 4, 3584, 18944, 1e-6, False,  7_615_616_512, "Qwen/Qwen2.5-7B-Instruct",    4),
    ("14b",  "Qwen2.5 14B Instruct",  152_064, 48, 40, 8, 5120, 13824, 1e-5, False, 14_770_033_664, "Qwen/Qwen2.5-14B-Instruct",   8),
    ("32b",  "Qwen2.5 32B Instruct",  152_064, 64, 40, 8, 5120, 27648, 1e-5, False, 32_763_876_352, "Qwen/Qwen2.5-32B-Instruct",  17),
    ("72b",  "Qwen2.5 72B Instruct",  152_064, 80, 64, 8, 8192, 29568, 1e-5, False, 72_706_203_648, "Qwen/Qwen2.5-72B-Instruct",  37),
    max_seq_len=32_768,
)
# fmt: on


def _base_and_instruct(size: Size) -> tuple[Size, Size]:
    """torchtune's per-checkpoint builders of ``size``, ``<size>_base`` and ``<size>_instruct``: both have
    the size's weight shapes; as in their HF config.json files, the base checkpoint has a 131,072-token
    context (and the size's RMSNorm eps: 1e-5 from 14B on), the instruct one 32,768 tokens and eps 1e-6."""
    instruct = str(size.hf_repo)
    base = instruct.removesuffix("-Instruct")
    return (
        Size(f"{size.name}_base", base.split("/")[1], {**size.dims, "max_seq_len": 131_072}, hf_repo=base),
        Size(f"{size.name}_instruct", instruct.split("/")[1], {**size.dims, "norm_eps": 1e-6}, hf_repo=instruct),
    )


FAMILY = FamilySpec(
    name="qwen2_5",
    title="Qwen2.5",
    model_type="QWEN2",
    aliases=("QWEN2_5",),
    hf_model_type="qwen2",
    defaults=dict(
        head_dim=None, attn_dropout=0.0, norm_eps=1e-6, rope_base=1_000_000.0, tie_word_embeddings=False, qkv_bias=True
    ),
    hf_extra={"use_sliding_window": False},
    check_hf_config=check_no_sliding_window,
    tokenizer="tuner.models.qwen2_5.qwen2_5_tokenizer",
    chat_format=ChatMLFormat,
    sizes=(
        *_SIZES,
        *(v for size in _SIZES if size.name in ("1_5b", "7b", "14b", "32b", "72b") for v in _base_and_instruct(size)),
    ),
)
globals().update(FAMILY.builders)

# torchtune's names of the component builders
qwen2, lora_qwen2, qlora_qwen2 = qwen2_5, lora_qwen2_5, qlora_qwen2_5  # type: ignore[name-defined]  # noqa: F821
