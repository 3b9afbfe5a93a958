"""Build a ``TransformerDecoder`` from data, and generate the LoRA/QLoRA builders of a family.

``transformer_decoder`` is the one builder; a family's spec (`tuner.models.spec`) says which of its
switches the family fixes and which it exposes. ``llama_mlp_width`` and ``llama3_rope_scaling`` turn
torchtune's builder arguments into decoder arguments for the families that take them.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from torch import nn

from tuner.models.attention import MultiHeadAttention
from tuner.models.mlp import FeedForward
from tuner.models.norms import RMSNorm
from tuner.models.rope import RotaryPositionalEmbeddings
from tuner.models.transformer import TransformerDecoder, TransformerSelfAttentionLayer
from tuner.peft.apply import apply_lora


def scale_hidden_dim_for_mlp(dim: int, multiple_of: int = 256) -> int:
    """Llama's default MLP width: 2/3 of 4*dim rounded up to ``multiple_of``."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def transformer_decoder(
    *,
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    head_dim: int | None = None,
    rope_base: float = 10_000.0,
    rope_scaling: dict[str, Any] | None = None,
    norm_eps: float = 1e-5,
    gemma_norm: bool = False,
    post_norms: bool = False,
    qkv_bias: bool = False,
    qk_norm: bool = False,
    tie_word_embeddings: bool = False,
    activation: str = "silu",
    attn_dropout: float = 0.0,
    attn_softcap: float | None = None,
    final_softcap: float | None = None,
    query_pre_attn_scalar: float | None = None,
    embed_scale: float | None = None,
    sliding_window: int | None = None,
    sliding_window_pattern: str = "all",
) -> TransformerDecoder:
    """The generic decoder.

    ``gemma_norm``: RMSNorm in Gemma's ``(1 + w)`` form. ``post_norms``: extra norms after attention
    and MLP (Gemma 2's ``sa_scale``/``mlp_scale``). ``qk_norm``: RMSNorm over each head's queries and
    keys before RoPE (Qwen3's ``q_norm``/``k_norm``). ``sliding_window_pattern``: ``"all"`` layers, or
    ``"even"`` (layers 0, 2, 4, ... as Gemma 2) use ``sliding_window`` when it is set.
    """
    head_dim = head_dim or embed_dim // num_heads
    scale = query_pre_attn_scalar**-0.5 if query_pre_attn_scalar else None
    rope = RotaryPositionalEmbeddings(head_dim, max_seq_len, rope_base, rope_scaling)

    def norm() -> RMSNorm:
        return RMSNorm(embed_dim, eps=norm_eps, offset=gemma_norm)

    layers = []
    for i in range(num_layers):
        window = sliding_window if (sliding_window_pattern == "all" or i % 2 == 0) else None
        attn = MultiHeadAttention(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            q_proj=nn.Linear(embed_dim, num_heads * head_dim, bias=qkv_bias),
            k_proj=nn.Linear(embed_dim, num_kv_heads * head_dim, bias=qkv_bias),
            v_proj=nn.Linear(embed_dim, num_kv_heads * head_dim, bias=qkv_bias),
            output_proj=nn.Linear(num_heads * head_dim, embed_dim, bias=False),
            scale=scale,
            softcap=attn_softcap,
            sliding_window=window,
            attn_dropout=attn_dropout,
            q_norm=RMSNorm(head_dim, eps=norm_eps, offset=gemma_norm) if qk_norm else None,
            k_norm=RMSNorm(head_dim, eps=norm_eps, offset=gemma_norm) if qk_norm else None,
        )
        mlp = FeedForward(
            gate_proj=nn.Linear(embed_dim, intermediate_dim, bias=False),
            down_proj=nn.Linear(intermediate_dim, embed_dim, bias=False),
            up_proj=nn.Linear(embed_dim, intermediate_dim, bias=False),
            act=activation,
        )
        layers.append(
            TransformerSelfAttentionLayer(
                attn=attn,
                mlp=mlp,
                sa_norm=norm(),
                mlp_norm=norm(),
                sa_scale=norm() if post_norms else None,
                mlp_scale=norm() if post_norms else None,
            )
        )
    return TransformerDecoder(
        tok_embeddings=nn.Embedding(vocab_size, embed_dim),
        layers=layers,
        rope=rope,
        norm=norm(),
        output=None if tie_word_embeddings else nn.Linear(embed_dim, vocab_size, bias=False),
        max_seq_len=max_seq_len,
        embed_scale=embed_scale,
        final_softcap=final_softcap,
    )


# ---- torchtune's builder arguments that are not decoder arguments ------------------------------------
#: Llama 3.1's rope-scaling builder arguments -> the keys of HF's ``rope_scaling`` ("llama3" type).
LLAMA3_SCALING = {
    "scale_factor": "factor",
    "low_freq_factor": "low_freq_factor",
    "high_freq_factor": "high_freq_factor",
    "old_context_len": "original_max_position_embeddings",
}


def llama_mlp_width(kw: dict[str, Any]) -> dict[str, Any]:
    """``intermediate_dim=None`` means Llama's rule (``scale_hidden_dim_for_mlp(embed_dim)``)."""
    if kw.get("intermediate_dim") is None:
        kw["intermediate_dim"] = scale_hidden_dim_for_mlp(kw["embed_dim"])
    return kw


def llama3_rope_scaling(kw: dict[str, Any]) -> dict[str, Any]:
    """``scale_factor``, ``low_freq_factor``, ... -> the decoder's ``rope_scaling`` dict."""
    kw["rope_scaling"] = {"rope_type": "llama3", **{LLAMA3_SCALING[k]: kw.pop(k) for k in LLAMA3_SCALING}}
    return kw


# ---- LoRA / QLoRA builders ---------------------------------------------------------------------
_LORA_DEFAULTS = dict(
    apply_lora_to_mlp=False,
    apply_lora_to_output=False,
    lora_rank=8,
    lora_alpha=16.0,
    lora_dropout=0.0,
    use_dora=False,
    quantize_base=False,
)


def make_lora_builder(
    base: Callable[..., TransformerDecoder], *, quantize_base: bool = False
) -> Callable[..., nn.Module]:
    """A ``lora_<base>`` (or ``qlora_<base>``) builder: build ``base`` and call ``tuner.peft.apply_lora``.

    Signature: ``(lora_attn_modules, apply_lora_to_mlp=False, apply_lora_to_output=False, lora_rank=8,
    lora_alpha=16.0, lora_dropout=0.0, use_dora=False, quantize_base=False, *, <base's parameters>,
    **variant_kwargs)``; ``qlora_*`` builders are the same with ``quantize_base=True`` by default.
    ``base_dtype`` (``fp8`` / ``fp8_fwd`` / ``fp8_all``, a variant keyword): a ``lora_*`` builder stores
    the frozen base in FP8 and runs its GEMMs in FP8; a ``qlora_*`` builder keeps the base stored in NF4
    and runs the same FP8 GEMMs on it, dequantized and quantized per row at each call (`apply_lora`).
    Keyword arguments that ``base`` accepts (its dimensions, for component builders) go to ``base``;
    any other keyword (variant options such as ``use_rslora``) goes on to ``apply_lora``.
    """
    base_sig = inspect.signature(base)
    base_names = set(base_sig.parameters)
    defaults = {**_LORA_DEFAULTS, "quantize_base": quantize_base}
    lora_names = list(defaults)

    def builder(lora_attn_modules, *args, **kwargs):
        if len(args) > len(lora_names):
            raise TypeError(f"{builder.__name__} takes at most {len(lora_names) + 1} positional arguments")
        lora_kwargs = dict(defaults)
        for name, value in zip(lora_names, args):
            if name in kwargs:
                raise TypeError(f"{builder.__name__} got multiple values for argument {name!r}")
            lora_kwargs[name] = value
        for name in lora_names:
            if name in kwargs:
                lora_kwargs[name] = kwargs.pop(name)
        base_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in base_names}
        model = base(**base_kwargs)
        return apply_lora(model, lora_attn_modules=list(lora_attn_modules), **lora_kwargs, **kwargs)

    lora_sig = inspect.signature(apply_lora).parameters
    hints = typing.get_type_hints(apply_lora)
    params = [
        inspect.Parameter(
            "lora_attn_modules",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=hints.get("lora_attn_modules", inspect.Parameter.empty),
        )
    ]
    params += [
        inspect.Parameter(
            n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v, annotation=hints.get(n, inspect.Parameter.empty)
        )
        for n, v in defaults.items()
    ]
    params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in base_sig.parameters.values()]
    # The variant options (use_rslora, lora_fa, use_vera, ...) are apply_lora's keyword-only parameters;
    # listing them (instead of **kwargs) lets config checks catch a misspelt one before anything is built.
    params += [
        p.replace(annotation=hints.get(n, inspect.Parameter.empty))
        for n, p in lora_sig.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in base_names
    ]
    builder.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    builder.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
    builder.__name__ = builder.__qualname__ = ("qlora_" if quantize_base else "lora_") + base.__name__
    builder.__module__ = base.__module__
    builder.__doc__ = (
        f"{'QLoRA (NF4 base)' if quantize_base else 'LoRA'} version of ``{base.__name__}``: builds it and "
        "applies ``tuner.peft.apply_lora`` with the given LoRA settings.\n\n"
        f"Signature: {builder.__signature__}"
    )
    return builder
