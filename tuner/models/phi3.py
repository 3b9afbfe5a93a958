"""Phi-3-mini (4k): Llama architecture with fused qkv / gate-up projections in its checkpoints
(split on load, fused on save by ``tuner.models.convert``), plain RoPE, and a 2047-token sliding
window as its HF config declares (only matters for sequences longer than 2047)."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def phi3(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: float = 10_000.0,
    sliding_window: int | None = None,
    tie_word_embeddings: bool = False,
) -> TransformerDecoder:
    """Phi-3 decoder of the given dimensions."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim, max_seq_len=max_seq_len,
        attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base, sliding_window=sliding_window,
        tie_word_embeddings=tie_word_embeddings,
    )


def phi3_mini() -> TransformerDecoder:
    """Phi-3-mini-4k-instruct (3,821,079,552 parameters)."""
    return phi3(vocab_size=32_064, num_layers=32, num_heads=32, num_kv_heads=32, embed_dim=3072,
                intermediate_dim=8192, max_seq_len=4096, sliding_window=2047)


lora_phi3 = make_lora_builder(phi3)
qlora_phi3 = make_lora_builder(phi3, quantize_base=True)
lora_phi3_mini = make_lora_builder(phi3_mini)
qlora_phi3_mini = make_lora_builder(phi3_mini, quantize_base=True)


from tuner.data.tokenizers import phi3_mini_tokenizer  # noqa: E402,F401  (torchtune path: tuner.models.phi3.phi3_mini_tokenizer)
