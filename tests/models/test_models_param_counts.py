"""Full-size builders have the published parameter counts (built on the meta device, no weights).

Each count is the one HF reports for the released checkpoint (the ``params`` of the family's size
row); for a representative size of every family the test also builds the HF model from the released
config.json values on the meta device, and our model from that same config dict through
``build_model_from_hf_config``.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import transformers

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.models.families import families, family


def _published() -> dict[str, int]:
    """builder path -> the published parameter count of every size row that has one."""
    return {f"{f.name}.{f.name}_{s.name}": s.params for f in families() for s in f.sizes if s.params}


# The released config.json values (the keys that shape the model, in config.json's own spelling) of a
# representative size of every family: the columns of _KEYS, then the family's own keys (a table: ruff
# format leaves it as written).
# fmt: off
_LLAMA3_ROPE = dict(rope_type="llama3", low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
_LLAMA3_1 = dict(rope_scaling=dict(_LLAMA3_ROPE, factor=8.0))
_LLAMA3_2 = dict(rope_scaling=dict(_LLAMA3_ROPE, factor=32.0), tie_word_embeddings=True, head_dim=64)
_GEMMA2 = dict(attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096, hidden_activation="gelu_pytorch_tanh")
_PHI3 = dict(original_max_position_embeddings=4096, rope_scaling=None, sliding_window=2047, pad_token_id=32000)
_QWEN2 = dict(use_sliding_window=False)
_QWEN3 = dict(head_dim=128, attention_bias=False, use_sliding_window=False)
_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta")
RELEASED_CONFIGS = {
    "llama2.llama2_7b":          (32000,   4096, 11008,  32,  32, 32,   4096, 1e-5, 1e4, {}),
    "llama3_1.llama3_1_8b":      (128256,  4096, 14336,  32,  32,  8, 131072, 1e-5, 5e5, _LLAMA3_1),
    "llama3_1.llama3_1_405b":    (128256, 16384, 53248, 126, 128,  8, 131072, 1e-5, 5e5, _LLAMA3_1),
    "llama3_2.llama3_2_1b":      (128256,  2048,  8192,  16,  32,  8, 131072, 1e-5, 5e5, _LLAMA3_2),
    "mistral.mistral_7b":        (32000,   4096, 14336,  32,  32,  8,  32768, 1e-5, 1e4, dict(sliding_window=4096)),
    "qwen2_5.qwen2_5_0_5b":      (151936,   896,  4864,  24,  14,  2,  32768, 1e-6, 1e6, dict(_QWEN2, tie_word_embeddings=True)),
    "qwen2_5.qwen2_5_72b":       (152064,  8192, 29568,  80,  64,  8,  32768, 1e-5, 1e6, dict(_QWEN2, tie_word_embeddings=False)),
    "gemma2.gemma2_2b":          (256000,  2304,  9216,  26,   8,  4,   8192, 1e-6, 1e4, dict(_GEMMA2, head_dim=256, query_pre_attn_scalar=256)),
    "gemma2.gemma2_27b":         (256000,  4608, 36864,  46,  32, 16,   8192, 1e-6, 1e4, dict(_GEMMA2, head_dim=128, query_pre_attn_scalar=144)),
    "phi3.phi3_mini":            (32064,   3072,  8192,  32,  32, 32,   4096, 1e-5, 1e4, _PHI3),
    "qwen3.qwen3_0_6b_instruct": (151936,  1024,  3072,  28,  16,  8,  40960, 1e-6, 1e6, dict(_QWEN3, tie_word_embeddings=True)),
    "qwen3.qwen3_8b_instruct":   (151936,  4096, 12288,  36,  32,  8,  40960, 1e-6, 1e6, dict(_QWEN3, tie_word_embeddings=False)),
    "smollm2.smollm2_135m":      (49152,    576,  1536,  30,   9,  3,   8192, 1e-5, 1e5, dict(tie_word_embeddings=True)),
}
# fmt: on


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _builder(path: str):
    module, fn = path.split(".")
    return getattr(importlib.import_module(f"tuner.models.{module}"), fn)


@pytest.mark.parametrize("path, published", sorted(_published().items()))
def test_published_parameter_count(path, published):
    with torch.device("meta"):
        model = _builder(path)()
    assert _count(model) == published


@pytest.mark.parametrize("path", sorted(RELEASED_CONFIGS))
def test_hf_model_from_released_config_has_same_count(path):
    *values, own = RELEASED_CONFIGS[path]
    cfg = {**dict(zip(_KEYS, values, strict=True)), **own}
    spec = family(path.split(".")[0])
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(spec.hf_model_type, **cfg))
        ours = build_model_from_hf_config(cfg, spec.model_type)
    assert _count(hf) == _published()[path]
    assert _count(ours) == _published()[path]
