"""Llama 3 (8B, 70B): plain RoPE with theta 5e5, GQA, vocab 128256, untied output."""

from __future__ import annotations

import sys as _sys

from tuner.data.tokenizers import Llama3Format, Llama3Tokenizer, llama3_tokenizer  # noqa: F401  (torchtune paths)
from tuner.data.tokenizers import llama3 as _tokenizer
from tuner.models._builder import llama_mlp_width
from tuner.models.spec import FamilySpec, Size

FAMILY = FamilySpec(
    name="llama3",
    title="Llama 3",
    model_type="LLAMA3",
    hf_model_type="llama",
    hf_architecture="LlamaForCausalLM",
    meta_format=True,
    required=("vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len"),
    defaults=dict(
        attn_dropout=0.0, rope_base=500_000.0, intermediate_dim=None, norm_eps=1e-5, tie_word_embeddings=False
    ),
    derive=(llama_mlp_width,),
    tokenizer="tuner.models.llama3.llama3_tokenizer",
    tokenizer_file="original/tokenizer.model",
    chat_format=Llama3Format,
    sizes=(
        Size(
            "8b",
            "Llama 3 8B Instruct",
            dict(
                vocab_size=128_256,
                num_layers=32,
                num_heads=32,
                num_kv_heads=8,
                embed_dim=4096,
                max_seq_len=8192,
                intermediate_dim=14336,
            ),
            params=8_030_261_248,
            hf_repo="meta-llama/Meta-Llama-3-8B-Instruct",
            shards=4,
        ),
        Size(
            "70b",
            "Llama 3 70B Instruct",
            dict(
                vocab_size=128_256,
                num_layers=80,
                num_heads=64,
                num_kv_heads=8,
                embed_dim=8192,
                max_seq_len=8192,
                intermediate_dim=28672,
            ),
            params=70_553_706_496,
            hf_repo="meta-llama/Meta-Llama-3-70B-Instruct",
            shards=30,
        ),
    ),
)
globals().update(FAMILY.builders)

# torchtune's module path tuner.models.llama3._tokenizer (CL100K_PATTERN, ...): this module is a
# file, not a package, so the tokenizer module is registered under that name.
_sys.modules[__name__ + "._tokenizer"] = _tokenizer


def base_llama_tp_plan() -> dict:
    """torchtune's tensor-parallel plan for Llama 3 / 3.1 / 3.2 / 3.3 (module pattern -> ``ParallelStyle``).

    tuner shards with FSDP2 only and never applies it: configs that name it (``tensor_parallel_plan``)
    run with ``tensor_parallel_dim: 1``; a larger ``tensor_parallel_dim`` is refused (see
    `tuner.config.torchtune_keys`)."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    return {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate()),
        "output": ColwiseParallel(output_layouts=Replicate()),
        "layers.*.attn.q_proj": ColwiseParallel(),
        "layers.*.attn.k_proj": ColwiseParallel(),
        "layers.*.attn.v_proj": ColwiseParallel(),
        "layers.*.attn.output_proj": RowwiseParallel(),
        "layers.*.mlp.w1": ColwiseParallel(),
        "layers.*.mlp.w2": RowwiseParallel(),
        "layers.*.mlp.w3": ColwiseParallel(),
    }
