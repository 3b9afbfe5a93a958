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


# The released sizes, one a row (a table: ruff format leaves it as written), as in their config.json files;
# a size's base and post-trained checkpoints differ only in context length.
# fmt: off
_SIZES = Size.table(
    ("name", "title", "num_layers", "num_heads", "embed_dim", "intermediate_dim", "tie_word_embeddings", "max_seq_len",
     "params", "hf_repo", "shards"),
    ("0_6b_base",     "Qwen3 0.6B Base", 28, 16, 1024,  3072,  True, 32_768,   596_049_920, "Qwen/Qwen3-0.6B-Base", 1),
    ("0_6b_instruct", "Qwen3 0.6B",      28, 16, 1024,  3072,  True, 40_960,   596_049_920, "Qwen/Qwen3-0.6B",      1),
    ("1_7b_base",     "Qwen3 1.7B Base", 28, 16, 2048,  6144,  True, 32_768, 1_720_574_976, "Qwen/Qwen3-1.7B-Base", 2),
    ("1_7b_instruct", "Qwen3 1.7B",      28, 16, 2048,  6144,  True, 40_960, 1_720_574_976, "Qwen/Qwen3-1.7B",      2),
    ("4b_base",       "Qwen3 4B Base",   36, 32, 2560,  9728,  True, 32_768, 4_022_468_096, "Qwen/Qwen3-4B-Base",   3),
    ("4b_instruct",   "Qwen3 4B",        36, 32, 2560,  9728,  True, 40_960, 4_022_468_096, "Qwen/Qwen3-4B",        3),
    ("8b_base",       "Qwen3 8B Base",   36, 32, 4096, 12288, False, 32_768, 8_190_735_360, "Qwen/Qwen3-8B-Base",   5),
    ("8b_instruct",   "Qwen3 8B",        36, 32, 4096, 12288, False, 40_960, 8_190_735_360, "Qwen/Qwen3-8B",        5),
    vocab_size=151_936, num_kv_heads=8, head_dim=128,
)
# fmt: on

FAMILY = FamilySpec(
    name="qwen3",
    title="Qwen3",
    hf_model_type="qwen3",
    defaults=dict(head_dim=None, attn_dropout=0.0, norm_eps=1e-6, rope_base=1_000_000.0, tie_word_embeddings=False),
    decoder=dict(qk_norm=True),
    hf_extra={"use_sliding_window": False},
    check_hf_config=_check_hf_config,
    tokenizer="tuner.models.qwen3.qwen3_tokenizer",
    chat_format=Qwen3Format,
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
