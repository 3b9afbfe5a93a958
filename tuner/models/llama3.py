"""Llama 3 (8B, 70B): plain RoPE with theta 5e5, GQA, vocab 128256, untied output."""

from __future__ import annotations

import sys as _sys

from tuner.data.tokenizers import Llama3Format, Llama3Tokenizer, llama3_tokenizer  # noqa: F401  (torchtune paths)
from tuner.data.tokenizers import llama3 as _tokenizer
from tuner.models import llama2
from tuner.models.spec import Size

#: What every Llama 3.x size shares: the tokenizer's vocabulary and 8 KV heads (grouped-query attention).
SHARED_DIMS = dict(vocab_size=128_256, num_kv_heads=8)

# The released sizes, one a row (a table: ruff format leaves it as written); the columns of every Llama 3.x
# size table (the other builder arguments, then the release) are SIZE_COLUMNS.
# fmt: off
SIZE_COLUMNS = ("name", "title", "num_layers", "num_heads", "embed_dim", "intermediate_dim",
                "params", "hf_repo", "shards")
_SIZES = Size.table(
    SIZE_COLUMNS,
    ("8b",  "Llama 3 8B Instruct",  32, 32, 4096, 14336,  8_030_261_248, "meta-llama/Meta-Llama-3-8B-Instruct",   4),
    ("70b", "Llama 3 70B Instruct", 80, 64, 8192, 28672, 70_553_706_496, "meta-llama/Meta-Llama-3-70B-Instruct", 30),
    **SHARED_DIMS, max_seq_len=8192,
)
# fmt: on

# Llama 2's architecture and checkpoint formats (Meta's too, and its MLP width rule) with its own defaults.
FAMILY = llama2.FAMILY.variant(
    name="llama3",
    title="Llama 3",
    model_type="LLAMA3",
    defaults=dict(
        attn_dropout=0.0, rope_base=500_000.0, intermediate_dim=None, norm_eps=1e-5, tie_word_embeddings=False
    ),
    tokenizer="tuner.models.llama3.llama3_tokenizer",
    tokenizer_file="original/tokenizer.model",
    chat_format=Llama3Format,
    sizes=_SIZES,
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
