"""SmolLM2 (135M, 360M, 1.7B): the Llama architecture with tied embeddings."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def smollm2(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    rope_base: float = 100_000.0,
    norm_eps: float = 1e-5,
    tie_word_embeddings: bool = True,
) -> TransformerDecoder:
    """SmolLM2 decoder of the given dimensions."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim, max_seq_len=max_seq_len,
        attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base,
        tie_word_embeddings=tie_word_embeddings,
    )


def smollm2_135m() -> TransformerDecoder:
    """SmolLM2-135M (134,515,008 parameters)."""
    return smollm2(vocab_size=49_152, num_layers=30, num_heads=9, num_kv_heads=3, embed_dim=576,
                   intermediate_dim=1536, max_seq_len=8192)


def smollm2_360m() -> TransformerDecoder:
    """SmolLM2-360M (361,821,120 parameters)."""
    return smollm2(vocab_size=49_152, num_layers=32, num_heads=15, num_kv_heads=5, embed_dim=960,
                   intermediate_dim=2560, max_seq_len=8192)


def smollm2_1_7b() -> TransformerDecoder:
    """SmolLM2-1.7B (1,711,376,384 parameters)."""
    return smollm2(vocab_size=49_152, num_layers=24, num_heads=32, num_kv_heads=32, embed_dim=2048,
                   intermediate_dim=8192, max_seq_len=8192, rope_base=130_000.0)


lora_smollm2 = make_lora_builder(smollm2)
qlora_smollm2 = make_lora_builder(smollm2, quantize_base=True)
lora_smollm2_135m = make_lora_builder(smollm2_135m)
qlora_smollm2_135m = make_lora_builder(smollm2_135m, quantize_base=True)
lora_smollm2_360m = make_lora_builder(smollm2_360m)
qlora_smollm2_360m = make_lora_builder(smollm2_360m, quantize_base=True)
lora_smollm2_1_7b = make_lora_builder(smollm2_1_7b)
qlora_smollm2_1_7b = make_lora_builder(smollm2_1_7b, quantize_base=True)


from tuner.data.tokenizers import smollm2_tokenizer  # noqa: E402,F401  (torchtune path: tuner.models.smollm2.smollm2_tokenizer)
