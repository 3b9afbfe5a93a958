"""Tiny random HF transformers models of every family, for parity tests (test-only helper)."""

from __future__ import annotations

import torch
import transformers

VOCAB = 96

#: The config.json keys of the tiny decoder tests build (2 layers, width 64, MLP 96, 4 heads, 2 KV heads): the
#: one place a test model's shape comes from; a test changes what it needs (``dict(TINY, hidden_size=32)``).
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)
_COMMON = dict(TINY, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# family -> (config class, model class, model_type, config kwargs)
FAMILIES = {
    "llama2": ("LlamaConfig", "LlamaForCausalLM", "LLAMA2", dict(num_key_value_heads=4, rope_theta=10_000.0)),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", "LLAMA3", dict(rope_theta=500_000.0)),
    "llama3_1": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "LLAMA3",
        dict(
            rope_theta=500_000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "llama3_2": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "LLAMA3_2",
        dict(
            rope_theta=500_000.0,
            tie_word_embeddings=True,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "mistral": ("MistralConfig", "MistralForCausalLM", "MISTRAL", dict(sliding_window=8, head_dim=16)),
    "qwen2_5": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        "QWEN2",
        dict(tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6),
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        "GEMMA2",
        dict(
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=8,
            attn_logit_softcapping=3.0,
            final_logit_softcapping=2.0,
            hidden_activation="gelu_pytorch_tanh",
            rms_norm_eps=1e-6,
        ),
    ),
    "phi3": (
        "Phi3Config",
        "Phi3ForCausalLM",
        "PHI3_MINI",
        dict(num_key_value_heads=4, sliding_window=8, original_max_position_embeddings=64),
    ),
    "smollm2": ("LlamaConfig", "LlamaForCausalLM", "SMOLLM2", dict(tie_word_embeddings=True, rope_theta=100_000.0)),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        "QWEN3",
        dict(head_dim=24, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False),
    ),
}


def tiny_hf_kwargs(family: str, **overrides) -> dict:
    """The config.json keys of ``family``'s tiny model; ``overrides`` change keys (e.g. a ``vocab_size``
    that fits a test tokenizer)."""
    return {**_COMMON, **FAMILIES[family][3], **overrides}


def tiny_hf_config(family: str, **overrides) -> transformers.PretrainedConfig:
    """The HF config of ``family``'s tiny model (`tiny_hf_kwargs`), with eager attention."""
    return getattr(transformers, FAMILIES[family][0])(
        **tiny_hf_kwargs(family, **overrides), attn_implementation="eager"
    )


def tiny_hf_model(family: str, seed: int = 0, **config_overrides):
    """(HF model in eval mode with random weights, its config dict, model_type); ``config_overrides``
    change the config (`tiny_hf_config`)."""
    _, model_cls, model_type, _ = FAMILIES[family]
    config = tiny_hf_config(family, **config_overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # norms and biases too, so every weight matters
            p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return model, config.to_dict(), model_type


def hf_model_from(family: str, state_dict: dict):
    """A fresh HF model of ``family`` loaded with ``state_dict`` (tied lm_head may be absent)."""
    config = tiny_hf_config(family)
    model = getattr(transformers, FAMILIES[family][1])(config).eval()
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    allowed = {"lm_head.weight"} if config.tie_word_embeddings else set()
    assert not unexpected, unexpected
    assert set(missing) <= allowed, missing
    if config.tie_word_embeddings:
        model.tie_weights()
    return model
