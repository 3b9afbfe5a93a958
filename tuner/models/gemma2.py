"""Gemma 2 (2B, 9B, 27B).

Differences from Llama, all data for the generic decoder: ``(1 + w)`` RMSNorms, extra post-attention
and post-MLP norms (``sa_scale``/``mlp_scale``), embeddings scaled by ``sqrt(embed_dim)``, GeGLU
(gelu-tanh) MLP, softmax scale ``query_pre_attn_scalar ** -0.5``, attention-logit soft-capping (50)
and final-logit soft-capping (30), a 4096-token sliding window on even layers (0, 2, ...), tied
embeddings.
"""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def gemma2(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: float = 10_000.0,
    hidden_capping_value: float | None = 50.0,
    final_capping_value: float | None = 30.0,
    sliding_window_size: int | None = 4096,
    query_pre_attn_scalar: float | None = None,
) -> TransformerDecoder:
    """Gemma 2 decoder (``query_pre_attn_scalar`` defaults to ``head_dim``)."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim, max_seq_len=max_seq_len, head_dim=head_dim,
        attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base, gemma_norm=True, post_norms=True,
        activation="gelu_pytorch_tanh", attn_softcap=hidden_capping_value, final_softcap=final_capping_value,
        query_pre_attn_scalar=query_pre_attn_scalar or head_dim, embed_scale=embed_dim**0.5,
        sliding_window=sliding_window_size, sliding_window_pattern="even", tie_word_embeddings=True,
    )


def gemma2_2b() -> TransformerDecoder:
    """gemma-2-2b (2,614,341,888 parameters)."""
    return gemma2(vocab_size=256_000, num_layers=26, num_heads=8, head_dim=256, num_kv_heads=4, embed_dim=2304,
                  intermediate_dim=9216, max_seq_len=8192, query_pre_attn_scalar=256)


def gemma2_9b() -> TransformerDecoder:
    """gemma-2-9b (9,241,705,984 parameters)."""
    return gemma2(vocab_size=256_000, num_layers=42, num_heads=16, head_dim=256, num_kv_heads=8, embed_dim=3584,
                  intermediate_dim=14336, max_seq_len=8192, query_pre_attn_scalar=256)


def gemma2_27b() -> TransformerDecoder:
    """gemma-2-27b (27,227,128,320 parameters)."""
    return gemma2(vocab_size=256_000, num_layers=46, num_heads=32, head_dim=128, num_kv_heads=16, embed_dim=4608,
                  intermediate_dim=36864, max_seq_len=8192, query_pre_attn_scalar=144)


lora_gemma2 = make_lora_builder(gemma2)
qlora_gemma2 = make_lora_builder(gemma2, quantize_base=True)
lora_gemma2_2b = make_lora_builder(gemma2_2b)
qlora_gemma2_2b = make_lora_builder(gemma2_2b, quantize_base=True)
lora_gemma2_9b = make_lora_builder(gemma2_9b)
qlora_gemma2_9b = make_lora_builder(gemma2_9b, quantize_base=True)
lora_gemma2_27b = make_lora_builder(gemma2_27b)
qlora_gemma2_27b = make_lora_builder(gemma2_27b, quantize_base=True)


from tuner.data.tokenizers import gemma2_tokenizer  # noqa: E402,F401  (torchtune path: tuner.models.gemma2.gemma2_tokenizer)
gemma_tokenizer = gemma2_tokenizer  # torchtune's Gemma 2 configs name tuner.models.gemma.gemma_tokenizer, also exported here
