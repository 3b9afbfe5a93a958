"""Llama 2 (7B, 13B, 70B): plain RoPE (theta 1e4), SwiGLU, untied output."""
from __future__ import annotations

from tuner.models._builder import make_lora_builder, scale_hidden_dim_for_mlp, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def llama2(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    intermediate_dim: int | None = None,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: float = 10_000.0,
    tie_word_embeddings: bool = False,
) -> TransformerDecoder:
    """Llama 2 decoder of the given dimensions (``intermediate_dim`` defaults to Llama's rule)."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim or scale_hidden_dim_for_mlp(embed_dim),
        max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base,
        tie_word_embeddings=tie_word_embeddings,
    )


def llama2_7b() -> TransformerDecoder:
    """Llama-2-7b (6,738,415,616 parameters)."""
    return llama2(vocab_size=32_000, num_layers=32, num_heads=32, num_kv_heads=32, embed_dim=4096,
                  intermediate_dim=11008, max_seq_len=4096)


def llama2_13b() -> TransformerDecoder:
    """Llama-2-13b (13,015,864,320 parameters)."""
    return llama2(vocab_size=32_000, num_layers=40, num_heads=40, num_kv_heads=40, embed_dim=5120,
                  intermediate_dim=13824, max_seq_len=4096)


def llama2_70b() -> TransformerDecoder:
    """Llama-2-70b (68,976,648,192 parameters)."""
    return llama2(vocab_size=32_000, num_layers=80, num_heads=64, num_kv_heads=8, embed_dim=8192,
                  intermediate_dim=28672, max_seq_len=4096)


lora_llama2 = make_lora_builder(llama2)
qlora_llama2 = make_lora_builder(llama2, quantize_base=True)
lora_llama2_7b = make_lora_builder(llama2_7b)
qlora_llama2_7b = make_lora_builder(llama2_7b, quantize_base=True)
lora_llama2_13b = make_lora_builder(llama2_13b)
qlora_llama2_13b = make_lora_builder(llama2_13b, quantize_base=True)
lora_llama2_70b = make_lora_builder(llama2_70b)
qlora_llama2_70b = make_lora_builder(llama2_70b, quantize_base=True)


from tuner.data.tokenizers import Llama2ChatTemplate, llama2_tokenizer  # noqa: E402,F401  (torchtune paths: tuner.models.llama2.*)
from tuner.errors import unsupported  # noqa: E402

llama2_classifier = unsupported("tuner.models.llama2.llama2_classifier", "classifier (reward-model) heads are outside tuner's scope",
                                "fine-tune the language model (llama2 / lora_llama2)")
