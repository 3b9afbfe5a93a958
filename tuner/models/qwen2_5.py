"""Qwen2.5 (0.5B ... 72B): Llama-like with q/k/v biases, rope theta 1e6; tied embeddings up to 3B."""
from __future__ import annotations

from typing import Callable

from tuner.models._builder import make_lora_builder, transformer_decoder
from tuner.models.transformer import TransformerDecoder


def qwen2_5(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    head_dim: int | None = None,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: float = 1_000_000.0,
    tie_word_embeddings: bool = False,
    qkv_bias: bool = True,
) -> TransformerDecoder:
    """Qwen2 / Qwen2.5 decoder of the given dimensions."""
    return transformer_decoder(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        embed_dim=embed_dim, intermediate_dim=intermediate_dim, max_seq_len=max_seq_len, head_dim=head_dim,
        attn_dropout=attn_dropout, norm_eps=norm_eps, rope_base=rope_base, qkv_bias=qkv_bias,
        tie_word_embeddings=tie_word_embeddings,
    )


qwen2 = qwen2_5  # torchtune's name of the component builder


def _qwen(vocab: int, layers: int, heads: int, kv: int, dim: int, inter: int, tied: bool,
          eps: float, max_seq_len: int = 32_768) -> TransformerDecoder:
    return qwen2_5(vocab_size=vocab, num_layers=layers, num_heads=heads, num_kv_heads=kv, embed_dim=dim,
                   intermediate_dim=inter, max_seq_len=max_seq_len, norm_eps=eps, tie_word_embeddings=tied)


def qwen2_5_0_5b() -> TransformerDecoder:
    """Qwen2.5-0.5B (494,032,768 parameters)."""
    return _qwen(151_936, 24, 14, 2, 896, 4864, True, 1e-6)


def qwen2_5_1_5b() -> TransformerDecoder:
    """Qwen2.5-1.5B (1,543,714,304 parameters)."""
    return _qwen(151_936, 28, 12, 2, 1536, 8960, True, 1e-6)


def qwen2_5_3b() -> TransformerDecoder:
    """Qwen2.5-3B (3,085,938,688 parameters)."""
    return _qwen(151_936, 36, 16, 2, 2048, 11008, True, 1e-6)


def qwen2_5_7b() -> TransformerDecoder:
    """Qwen2.5-7B (7,615,616,512 parameters)."""
    return _qwen(152_064, 28, 28, 4, 3584, 18944, False, 1e-6)


def qwen2_5_14b() -> TransformerDecoder:
    """Qwen2.5-14B (14,770,033,664 parameters)."""
    return _qwen(152_064, 48, 40, 8, 5120, 13824, False, 1e-5)


def qwen2_5_32b() -> TransformerDecoder:
    """Qwen2.5-32B (32,763,876,352 parameters)."""
    return _qwen(152_064, 64, 40, 8, 5120, 27648, False, 1e-5)


def qwen2_5_72b() -> TransformerDecoder:
    """Qwen2.5-72B (72,706,203,648 parameters)."""
    return _qwen(152_064, 80, 64, 8, 8192, 29568, False, 1e-5)


def _checkpoint(name: str, title: str, *dims: object) -> Callable[[], TransformerDecoder]:
    def build() -> TransformerDecoder:
        return _qwen(*dims)  # type: ignore[arg-type]

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{title}."
    return build


# torchtune's per-checkpoint names. A size's base and instruct checkpoints have the same weight
# shapes; as in their HF config.json files, the base ones have a 131,072-token context and, from 14B
# on, RMSNorm eps 1e-5, the instruct ones 32,768 tokens and eps 1e-6.
qwen2_5_1_5b_base = _checkpoint("qwen2_5_1_5b_base", "Qwen2.5-1.5B", 151_936, 28, 12, 2, 1536, 8960, True, 1e-6, 131_072)
qwen2_5_1_5b_instruct = _checkpoint("qwen2_5_1_5b_instruct", "Qwen2.5-1.5B-Instruct", 151_936, 28, 12, 2, 1536, 8960, True, 1e-6)
qwen2_5_7b_base = _checkpoint("qwen2_5_7b_base", "Qwen2.5-7B", 152_064, 28, 28, 4, 3584, 18944, False, 1e-6, 131_072)
qwen2_5_7b_instruct = _checkpoint("qwen2_5_7b_instruct", "Qwen2.5-7B-Instruct", 152_064, 28, 28, 4, 3584, 18944, False, 1e-6)
qwen2_5_14b_base = _checkpoint("qwen2_5_14b_base", "Qwen2.5-14B", 152_064, 48, 40, 8, 5120, 13824, False, 1e-5, 131_072)
qwen2_5_14b_instruct = _checkpoint("qwen2_5_14b_instruct", "Qwen2.5-14B-Instruct", 152_064, 48, 40, 8, 5120, 13824, False, 1e-6)
qwen2_5_32b_base = _checkpoint("qwen2_5_32b_base", "Qwen2.5-32B", 152_064, 64, 40, 8, 5120, 27648, False, 1e-5, 131_072)
qwen2_5_32b_instruct = _checkpoint("qwen2_5_32b_instruct", "Qwen2.5-32B-Instruct", 152_064, 64, 40, 8, 5120, 27648, False, 1e-6)
qwen2_5_72b_base = _checkpoint("qwen2_5_72b_base", "Qwen2.5-72B", 152_064, 80, 64, 8, 8192, 29568, False, 1e-5, 131_072)
qwen2_5_72b_instruct = _checkpoint("qwen2_5_72b_instruct", "Qwen2.5-72B-Instruct", 152_064, 80, 64, 8, 8192, 29568, False, 1e-6)


lora_qwen2_5 = make_lora_builder(qwen2_5)
qlora_qwen2_5 = make_lora_builder(qwen2_5, quantize_base=True)
lora_qwen2 = lora_qwen2_5
qlora_qwen2 = qlora_qwen2_5
lora_qwen2_5_0_5b = make_lora_builder(qwen2_5_0_5b)
qlora_qwen2_5_0_5b = make_lora_builder(qwen2_5_0_5b, quantize_base=True)
lora_qwen2_5_1_5b = make_lora_builder(qwen2_5_1_5b)
qlora_qwen2_5_1_5b = make_lora_builder(qwen2_5_1_5b, quantize_base=True)
lora_qwen2_5_3b = make_lora_builder(qwen2_5_3b)
qlora_qwen2_5_3b = make_lora_builder(qwen2_5_3b, quantize_base=True)
lora_qwen2_5_7b = make_lora_builder(qwen2_5_7b)
qlora_qwen2_5_7b = make_lora_builder(qwen2_5_7b, quantize_base=True)
lora_qwen2_5_14b = make_lora_builder(qwen2_5_14b)
qlora_qwen2_5_14b = make_lora_builder(qwen2_5_14b, quantize_base=True)
lora_qwen2_5_32b = make_lora_builder(qwen2_5_32b)
qlora_qwen2_5_32b = make_lora_builder(qwen2_5_32b, quantize_base=True)
lora_qwen2_5_72b = make_lora_builder(qwen2_5_72b)
qlora_qwen2_5_72b = make_lora_builder(qwen2_5_72b, quantize_base=True)
for _size in ("1_5b", "7b", "14b", "32b", "72b"):
    for _kind in ("base", "instruct"):
        _base = globals()[f"qwen2_5_{_size}_{_kind}"]
        globals()[f"lora_{_base.__name__}"] = make_lora_builder(_base)
        globals()[f"qlora_{_base.__name__}"] = make_lora_builder(_base, quantize_base=True)
del _size, _kind, _base


from tuner.data.tokenizers import qwen2_5_tokenizer  # noqa: E402,F401  (torchtune path: tuner.models.qwen2_5.qwen2_5_tokenizer)
