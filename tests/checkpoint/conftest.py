"""Tiny Hugging Face models of each family, saved with ``save_pretrained``, as checkpoint inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.models.hf_tiny import TINY, VOCAB

_COMMON = dict(TINY, hidden_size=32, intermediate_size=64)

#: family -> (tuner model_type, transformers config class name, extra config kwargs)
FAMILIES: dict[str, tuple[str, str, dict]] = {
    "llama": ("LLAMA3", "LlamaConfig", {"tie_word_embeddings": False, "rope_theta": 500000.0}),
    "mistral": ("MISTRAL", "MistralConfig", {"tie_word_embeddings": False, "sliding_window": None}),
    "qwen2": ("QWEN2", "Qwen2Config", {"tie_word_embeddings": True}),
    "gemma2": (
        "GEMMA2",
        "Gemma2Config",
        {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16, "hidden_activation": "gelu_pytorch_tanh"},
    ),
    "phi3": ("PHI3_MINI", "Phi3Config", {"tie_word_embeddings": False, "pad_token_id": 0}),
    "smollm2": ("SMOLLM2", "LlamaConfig", {"tie_word_embeddings": True, "rope_theta": 100000.0}),
    "qwen3": ("QWEN3", "Qwen3Config", {"tie_word_embeddings": True, "head_dim": 16}),
}


def make_hf_model(family: str, seed: int = 0):
    """A tiny random transformers causal LM of ``family`` (fp32, eval mode)."""
    import transformers

    model_type, cls_name, extra = FAMILIES[family]
    config = getattr(transformers, cls_name)(**{**_COMMON, **extra})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    # random norms too, so a dropped or misplaced norm weight changes the logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def save_hf_model(model, folder: Path, sharded: bool = False) -> Path:
    """``save_pretrained`` (tiny ``max_shard_size`` when sharded) plus fake tokenizer side files."""
    model.save_pretrained(folder, max_shard_size="20KB" if sharded else "50GB")
    (folder / "tokenizer.json").write_text('{"fake": "tokenizer"}\n')
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 64}\n')
    (folder / "chat_template.jinja").write_text("{{ messages }}\n")
    return folder


def hf_logits(folder_or_model, tokens: torch.Tensor) -> torch.Tensor:
    import transformers

    model = folder_or_model
    if isinstance(folder_or_model, (str, Path)):
        model = transformers.AutoModelForCausalLM.from_pretrained(folder_or_model).eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
