"""Mistral 7B: Llama architecture with GQA; v0.1 uses a 4096-token sliding window (as its HF config
says, and as transformers applies it), v0.3 a 32768 vocabulary, rope theta 1e6 and no window."""

from __future__ import annotations

from tuner.data.tokenizers import MistralChatTemplate, MistralFormat, mistral_tokenizer  # noqa: F401  (torchtune paths)
from tuner.models.spec import FamilySpec, Size

# The released sizes, one a row (a table: ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    ("name", "title", "vocab_size", "rope_base", "sliding_window", "params", "hf_repo", "shards"),
    ("7b",      "Mistral 7B v0.1",          32_000,    10_000.0, 4096, 7_241_732_096, "mistralai/Mistral-7B-v0.1",          2),
    ("7b_v0_3", "Mistral 7B Instruct v0.3", 32_768, 1_000_000.0, None, 7_248_023_552, "mistralai/Mistral-7B-Instruct-v0.3", 3),
    num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096, intermediate_dim=14336, max_seq_len=32_768,
)
# fmt: on

FAMILY = FamilySpec(
    name="mistral",
    title="Mistral",
    hf_model_type="mistral",
    hf_reads=("llama",),
    defaults=dict(
        attn_dropout=0.0,
        norm_eps=1e-5,
        rope_base=10_000.0,
        sliding_window=None,
        head_dim=None,
        tie_word_embeddings=False,
    ),
    tokenizer="tuner.models.mistral.mistral_tokenizer",
    tokenizer_file="tokenizer.model",
    chat_format=MistralFormat,
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
