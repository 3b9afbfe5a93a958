"""Full-size builders have the published parameter counts (built on the meta device, no weights).

Each count is the one HF reports for the released checkpoint; for a representative size of every
family the test also builds the HF model from the released config.json values on the meta device,
and our model from that same config dict through ``build_model_from_hf_config``.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import transformers

from tuner.checkpoint.hf_config import build_model_from_hf_config

PUBLISHED = {
    "llama2.llama2_7b": 6_738_415_616,
    "llama2.llama2_13b": 13_015_864_320,
    "llama2.llama2_70b": 68_976_648_192,
    "llama3.llama3_8b": 8_030_261_248,
    "llama3.llama3_70b": 70_553_706_496,
    "llama3_1.llama3_1_8b": 8_030_261_248,
    "llama3_1.llama3_1_70b": 70_553_706_496,
    "llama3_1.llama3_1_405b": 405_853_388_800,
    "llama3_2.llama3_2_1b": 1_235_814_400,
    "llama3_2.llama3_2_3b": 3_212_749_824,
    "mistral.mistral_7b": 7_241_732_096,
    "mistral.mistral_7b_v0_3": 7_248_023_552,
    "qwen2_5.qwen2_5_0_5b": 494_032_768,
    "qwen2_5.qwen2_5_1_5b": 1_543_714_304,
    "qwen2_5.qwen2_5_3b": 3_085_938_688,
    "qwen2_5.qwen2_5_7b": 7_615_616_512,
    "qwen2_5.qwen2_5_14b": 14_770_033_664,
    "qwen2_5.qwen2_5_32b": 32_763_876_352,
    "qwen2_5.qwen2_5_72b": 72_706_203_648,
    "gemma2.gemma2_2b": 2_614_341_888,
    "gemma2.gemma2_9b": 9_241_705_984,
    "gemma2.gemma2_27b": 27_227_128_320,
    "phi3.phi3_mini": 3_821_079_552,
    "smollm2.smollm2_135m": 134_515_008,
    "smollm2.smollm2_360m": 361_821_120,
    "smollm2.smollm2_1_7b": 1_711_376_384,
    "qwen3.qwen3_0_6b_instruct": 596_049_920,
    "qwen3.qwen3_1_7b_base": 1_720_574_976,
    "qwen3.qwen3_4b_instruct": 4_022_468_096,
    "qwen3.qwen3_8b_instruct": 8_190_735_360,
}

_LLAMA31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
# released config.json values (the keys that shape the model), in config.json's own spelling
RELEASED_CONFIGS = {
    "llama2.llama2_7b": (
        "LLAMA2",
        "LlamaConfig",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
        ),
    ),
    "llama3_1.llama3_1_8b": (
        "LLAMA3",
        "LlamaConfig",
        dict(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling=_LLAMA31,
        ),
    ),
    "llama3_1.llama3_1_405b": (
        "LLAMA3",
        "LlamaConfig",
        dict(
            vocab_size=128256,
            hidden_size=16384,
            intermediate_size=53248,
            num_hidden_layers=126,
            num_attention_heads=128,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling=_LLAMA31,
        ),
    ),
    "llama3_2.llama3_2_1b": (
        "LLAMA3_2",
        "LlamaConfig",
        dict(
            vocab_size=128256,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={**_LLAMA31, "factor": 32.0},
            tie_word_embeddings=True,
            head_dim=64,
        ),
    ),
    "mistral.mistral_7b": (
        "MISTRAL",
        "MistralConfig",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=32768,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            sliding_window=4096,
        ),
    ),
    "qwen2_5.qwen2_5_0_5b": (
        "QWEN2",
        "Qwen2Config",
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
    ),
    "qwen2_5.qwen2_5_72b": (
        "QWEN2",
        "Qwen2Config",
        dict(
            vocab_size=152064,
            hidden_size=8192,
            intermediate_size=29568,
            num_hidden_layers=80,
            num_attention_heads=64,
            num_key_value_heads=8,
            max_position_embeddings=32768,
            rms_norm_eps=1e-5,
            rope_theta=1000000.0,
            tie_word_embeddings=False,
            use_sliding_window=False,
        ),
    ),
    "gemma2.gemma2_2b": (
        "GEMMA2",
        "Gemma2Config",
        dict(
            vocab_size=256000,
            hidden_size=2304,
            intermediate_size=9216,
            num_hidden_layers=26,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            max_position_embeddings=8192,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            query_pre_attn_scalar=256,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            sliding_window=4096,
            hidden_activation="gelu_pytorch_tanh",
        ),
    ),
    "gemma2.gemma2_27b": (
        "GEMMA2",
        "Gemma2Config",
        dict(
            vocab_size=256000,
            hidden_size=4608,
            intermediate_size=36864,
            num_hidden_layers=46,
            num_attention_heads=32,
            num_key_value_heads=16,
            head_dim=128,
            max_position_embeddings=8192,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            query_pre_attn_scalar=144,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            sliding_window=4096,
            hidden_activation="gelu_pytorch_tanh",
        ),
    ),
    "phi3.phi3_mini": (
        "PHI3_MINI",
        "Phi3Config",
        dict(
            vocab_size=32064,
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            original_max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling=None,
            sliding_window=2047,
            pad_token_id=32000,
        ),
    ),
    "qwen3.qwen3_0_6b_instruct": (
        "QWEN3",
        "Qwen3Config",
        dict(
            vocab_size=151936,
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            attention_bias=False,
            use_sliding_window=False,
        ),
    ),
    "qwen3.qwen3_8b_instruct": (
        "QWEN3",
        "Qwen3Config",
        dict(
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=False,
            attention_bias=False,
            use_sliding_window=False,
        ),
    ),
    "smollm2.smollm2_135m": (
        "SMOLLM2",
        "LlamaConfig",
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_theta=100000.0,
            tie_word_embeddings=True,
        ),
    ),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _builder(path: str):
    module, fn = path.split(".")
    return getattr(importlib.import_module(f"tuner.models.{module}"), fn)


@pytest.mark.parametrize("path", sorted(PUBLISHED))
def test_published_parameter_count(path):
    with torch.device("meta"):
        model = _builder(path)()
    assert _count(model) == PUBLISHED[path]


@pytest.mark.parametrize("path", sorted(RELEASED_CONFIGS))
def test_hf_model_from_released_config_has_same_count(path):
    model_type, cfg_cls, cfg = RELEASED_CONFIGS[path]
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cfg_cls)(**cfg))
        ours = build_model_from_hf_config(cfg, model_type)
    assert _count(hf) == PUBLISHED[path]
    assert _count(ours) == PUBLISHED[path]
