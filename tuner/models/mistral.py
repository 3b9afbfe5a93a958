"""Mistral 7B: Llama architecture with GQA; v0.1 uses a 4096-token sliding window (as its HF config
says, and as transformers applies it), v0.3 a 32768 vocabulary, rope theta 1e6 and no window."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def mistral(
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
    head_dim: int | None = None,
    tie_word_embeddings: bool = False,
) -> TransformerDecoder:
    """Mistral decoder of the given dimensions (``sliding_window`` None = full attention)."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim, max_seq_len=max_seq_len, head_dim=head_dim,
        attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base, sliding_window=sliding_window,
        tie_word_embeddings=tie_word_embeddings,
    )


def mistral_7b() -> TransformerDecoder:
    """Mistral-7B-v0.1 (7,241,732,096 parameters)."""
    return mistral(vocab_size=32_000, num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096,
                   intermediate_dim=14336, max_seq_len=32_768, sliding_window=4096)


def mistral_7b_v0_3() -> TransformerDecoder:
    """Mistral-7B-v0.3 (7,248,023,552 parameters)."""
    return mistral(vocab_size=32_768, num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096,
                   intermediate_dim=14336, max_seq_len=32_768, rope_base=1_000_000.0)


lora_mistral = make_lora_builder(mistral)
qlora_mistral = make_lora_builder(mistral, quantize_base=True)
lora_mistral_7b = make_lora_builder(mistral_7b)
qlora_mistral_7b = make_lora_builder(mistral_7b, quantize_base=True)
lora_mistral_7b_v0_3 = make_lora_builder(mistral_7b_v0_3)
qlora_mistral_7b_v0_3 = make_lora_builder(mistral_7b_v0_3, quantize_base=True)


from tuner.data.tokenizers import MistralChatTemplate, mistral_tokenizer  # noqa: E402,F401  (torchtune paths: tuner.models.mistral.*)
