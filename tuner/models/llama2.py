"""Llama 2 (7B, 13B, 70B): plain RoPE (theta 1e4), SwiGLU, untied output."""

from __future__ import annotations

from tuner.data.tokenizers import Llama2ChatTemplate, Llama2Format, llama2_tokenizer  # noqa: F401  (torchtune paths)
from tuner.errors import unsupported
from tuner.models._builder import llama_mlp_width
from tuner.models.spec import FamilySpec, Size

FAMILY = FamilySpec(
    name="llama2",
    title="Llama 2",
    model_type="LLAMA2",
    hf_model_type="llama",
    hf_architecture="LlamaForCausalLM",
    meta_format=True,
    required=("vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len"),
    defaults=dict(
        intermediate_dim=None, attn_dropout=0.0, norm_eps=1e-5, rope_base=10_000.0, tie_word_embeddings=False
    ),
    derive=(llama_mlp_width,),
    tokenizer="tuner.models.llama2.llama2_tokenizer",
    tokenizer_file="tokenizer.model",
    chat_format=Llama2Format,
    sizes=(
        Size(
            "7b",
            "Llama 2 7B",
            dict(
                vocab_size=32_000,
                num_layers=32,
                num_heads=32,
                num_kv_heads=32,
                embed_dim=4096,
                intermediate_dim=11008,
                max_seq_len=4096,
            ),
            params=6_738_415_616,
            hf_repo="meta-llama/Llama-2-7b-hf",
            shards=2,
        ),
        Size(
            "13b",
            "Llama 2 13B",
            dict(
                vocab_size=32_000,
                num_layers=40,
                num_heads=40,
                num_kv_heads=40,
                embed_dim=5120,
                intermediate_dim=13824,
                max_seq_len=4096,
            ),
            params=13_015_864_320,
            hf_repo="meta-llama/Llama-2-13b-hf",
            shards=3,
        ),
        Size(
            "70b",
            "Llama 2 70B",
            dict(
                vocab_size=32_000,
                num_layers=80,
                num_heads=64,
                num_kv_heads=8,
                embed_dim=8192,
                intermediate_dim=28672,
                max_seq_len=4096,
            ),
            params=68_976_648_192,
            hf_repo="meta-llama/Llama-2-70b-hf",
            shards=15,
        ),
    ),
)
globals().update(FAMILY.builders)

llama2_classifier = unsupported(
    "tuner.models.llama2.llama2_classifier",
    "classifier (reward-model) heads are outside tuner's scope",
    "fine-tune the language model (llama2 / lora_llama2)",
)
