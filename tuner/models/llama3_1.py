"""Llama 3.1 (8B, 70B, 405B): Llama 3 with "llama3" rope scaling (factor 8) and 128k context."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, scale_hidden_dim_for_mlp, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def llama3_1(
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
    scale_factor: float = 8.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    old_context_len: int = 8192,
    tie_word_embeddings: bool = False,
) -> TransformerDecoder:
    """Llama 3.1 decoder of the given dimensions (``scale_factor`` etc.: the "llama3" rope scaling)."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim or scale_hidden_dim_for_mlp(embed_dim),
        max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base,
        rope_scaling={
            "rope_type": "llama3",
            "factor": scale_factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": old_context_len,
        },
        tie_word_embeddings=tie_word_embeddings,
    )


def llama3_1_8b() -> TransformerDecoder:
    """Llama-3.1-8B (8,030,261,248 parameters)."""
    return llama3_1(vocab_size=128_256, num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096,
                    max_seq_len=131_072, intermediate_dim=14336)


def llama3_1_70b() -> TransformerDecoder:
    """Llama-3.1-70B (70,553,706,496 parameters)."""
    return llama3_1(vocab_size=128_256, num_layers=80, num_heads=64, num_kv_heads=8, embed_dim=8192,
                    max_seq_len=131_072, intermediate_dim=28672)


def llama3_1_405b() -> TransformerDecoder:
    """Llama-3.1-405B (405,853,388,800 parameters)."""
    return llama3_1(vocab_size=128_256, num_layers=126, num_heads=128, num_kv_heads=8, embed_dim=16384,
                    max_seq_len=131_072, intermediate_dim=53248)


lora_llama3_1 = make_lora_builder(llama3_1)
qlora_llama3_1 = make_lora_builder(llama3_1, quantize_base=True)
lora_llama3_1_8b = make_lora_builder(llama3_1_8b)
qlora_llama3_1_8b = make_lora_builder(llama3_1_8b, quantize_base=True)
lora_llama3_1_70b = make_lora_builder(llama3_1_70b)
qlora_llama3_1_70b = make_lora_builder(llama3_1_70b, quantize_base=True)
lora_llama3_1_405b = make_lora_builder(llama3_1_405b)
qlora_llama3_1_405b = make_lora_builder(llama3_1_405b, quantize_base=True)
