"""Llama 3 (8B, 70B): plain RoPE with theta 5e5, GQA, vocab 128256, untied output."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, scale_hidden_dim_for_mlp, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def llama3(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    rope_base: float = 500_000.0,
    intermediate_dim: int | None = None,
    norm_eps: float = 1e-5,
    tie_word_embeddings: bool = False,
) -> TransformerDecoder:
    """Llama 3 decoder of the given dimensions."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim or scale_hidden_dim_for_mlp(embed_dim),
        max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base,
        tie_word_embeddings=tie_word_embeddings,
    )


def llama3_8b() -> TransformerDecoder:
    """Meta-Llama-3-8B (8,030,261,248 parameters)."""
    return llama3(vocab_size=128_256, num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096,
                  max_seq_len=8192, intermediate_dim=14336)


def llama3_70b() -> TransformerDecoder:
    """Meta-Llama-3-70B (70,553,706,496 parameters)."""
    return llama3(vocab_size=128_256, num_layers=80, num_heads=64, num_kv_heads=8, embed_dim=8192,
                  max_seq_len=8192, intermediate_dim=28672)


lora_llama3 = make_lora_builder(llama3)
qlora_llama3 = make_lora_builder(llama3, quantize_base=True)
lora_llama3_8b = make_lora_builder(llama3_8b)
qlora_llama3_8b = make_lora_builder(llama3_8b, quantize_base=True)
lora_llama3_70b = make_lora_builder(llama3_70b)
qlora_llama3_70b = make_lora_builder(llama3_70b, quantize_base=True)


from tuner.data.tokenizers import Llama3Tokenizer, llama3_tokenizer  # noqa: E402,F401  (torchtune paths: tuner.models.llama3.*)
import sys as _sys  # noqa: E402

from tuner.data.tokenizers import llama3 as _tokenizer  # noqa: E402

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
