"""Llama 3.2 text (1B, 3B): Llama 3.1 architecture, rope scaling factor 32, tied embeddings."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder
from tuner.models.llama3_1 import llama3_1
from tuner.models.transformer import TransformerDecoder


def llama3_2(
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
    scale_factor: float = 32.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    old_context_len: int = 8192,
    tie_word_embeddings: bool = True,
) -> TransformerDecoder:
    """Llama 3.2 decoder of the given dimensions."""
    return llama3_1(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, max_seq_len=max_seq_len, attn_dropout=attn_dropout, rope_base=rope_base,
        intermediate_dim=intermediate_dim, norm_eps=norm_eps, scale_factor=scale_factor,
        low_freq_factor=low_freq_factor, high_freq_factor=high_freq_factor, old_context_len=old_context_len,
        tie_word_embeddings=tie_word_embeddings,
    )


def llama3_2_1b() -> TransformerDecoder:
    """Llama-3.2-1B (1,235,814,400 parameters)."""
    return llama3_2(vocab_size=128_256, num_layers=16, num_heads=32, num_kv_heads=8, embed_dim=2048,
                    max_seq_len=131_072, intermediate_dim=8192)


def llama3_2_3b() -> TransformerDecoder:
    """Llama-3.2-3B (3,212,749,824 parameters)."""
    return llama3_2(vocab_size=128_256, num_layers=28, num_heads=24, num_kv_heads=8, embed_dim=3072,
                    max_seq_len=131_072, intermediate_dim=8192)


lora_llama3_2 = make_lora_builder(llama3_2)
qlora_llama3_2 = make_lora_builder(llama3_2, quantize_base=True)
lora_llama3_2_1b = make_lora_builder(llama3_2_1b)
qlora_llama3_2_1b = make_lora_builder(llama3_2_1b, quantize_base=True)
lora_llama3_2_3b = make_lora_builder(llama3_2_3b)
qlora_llama3_2_3b = make_lora_builder(llama3_2_3b, quantize_base=True)
