"""SmolLM2 (135M, 360M, 1.7B): the Llama architecture with tied embeddings."""

from __future__ import annotations

from tuner.data.tokenizers import ChatMLFormat, smollm2_tokenizer  # noqa: F401  (torchtune path)
from tuner.models.spec import FamilySpec, Size

# The released sizes, one a row (a table: ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    ("name", "title", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "intermediate_dim", "rope_base",
     "params", "hf_repo"),
    ("135m", "SmolLM2 135M Instruct", 30,  9,  3,  576, 1536, 100_000.0,   134_515_008, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("360m", "SmolLM2 360M Instruct", 32, 15,  5,  960, 2560, 100_000.0,   361_821_120, "HuggingFaceTB/SmolLM2-360M-Instruct"),
    ("1_7b", "SmolLM2 1.7B Instruct", 24, 32, 32, 2048, 8192, 130_000.0, 1_711_376_384, "HuggingFaceTB/SmolLM2-1.7B-Instruct"),
    vocab_size=49_152, max_seq_len=8192,
)
# fmt: on

FAMILY = FamilySpec(
    name="smollm2",
    title="SmolLM2",
    hf_model_type="llama",
    defaults=dict(attn_dropout=0.0, rope_base=100_000.0, norm_eps=1e-5, tie_word_embeddings=True),
    tokenizer="tuner.models.smollm2.smollm2_tokenizer",
    chat_format=ChatMLFormat,
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
