"""Llama 2 (7B, 13B, 70B): plain RoPE (theta 1e4), SwiGLU, untied output."""

from __future__ import annotations

from tuner.data.tokenizers import Llama2ChatTemplate, Llama2Format, llama2_tokenizer  # noqa: F401  (torchtune paths)
from tuner.errors import unsupported
from tuner.models._builder import llama_mlp_width
from tuner.models.spec import FamilySpec, Size

# The released sizes, one a row (a table: ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    ("name", "title", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "intermediate_dim", "params", "hf_repo",
     "shards"),
    ("7b",  "Llama 2 7B",  32, 32, 32, 4096, 11008,  6_738_415_616, "meta-llama/Llama-2-7b-hf",   2),
    ("13b", "Llama 2 13B", 40, 40, 40, 5120, 13824, 13_015_864_320, "meta-llama/Llama-2-13b-hf",  3),
    ("70b", "Llama 2 70B", 80, 64,  8, 8192, 28672, 68_976_648_192, "meta-llama/Llama-2-70b-hf", 15),
    vocab_size=32_000, max_seq_len=4096,
)
# fmt: on

FAMILY = FamilySpec(
    name="llama2",
    title="Llama 2",
    hf_model_type="llama",
    meta_format=True,
    required=("vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len"),
    defaults=dict(
        intermediate_dim=None, attn_dropout=0.0, norm_eps=1e-5, rope_base=10_000.0, tie_word_embeddings=False
    ),
    derive=(llama_mlp_width,),
    tokenizer="tuner.models.llama2.llama2_tokenizer",
    tokenizer_file="tokenizer.model",
    chat_format=Llama2Format,
    sizes=_SIZES,
)
globals().update(FAMILY.builders)

llama2_classifier = unsupported(
    "tuner.models.llama2.llama2_classifier",
    "classifier (reward-model) heads are outside tuner's scope",
    "fine-tune the language model (llama2 / lora_llama2)",
)
