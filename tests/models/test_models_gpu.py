"""GPU paths (flash SDPA, FlexAttention for soft-capping, KV cache on CUDA) agree with the CPU reference."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import VOCAB, tiny_hf_model

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.generation import generate

pytestmark = pytest.mark.gpu


def _model(family):
    hf, cfg, mt = tiny_hf_model(family)
    model = build_model_from_hf_config(cfg, mt).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), mt, cfg))
    return model


@pytest.mark.parametrize("family", ["llama3_1", "gemma2", "qwen2_5", "mistral", "qwen3"])  # mistral: 8-token window
@torch.no_grad()
def test_cuda_logits_match_cpu(family):
    model = _model(family)
    tokens = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(0))
    ref = model(tokens)
    model.cuda()
    out = model(tokens.cuda()).cpu()  # gemma2, mistral: FlexAttention with a cached BlockMask
    assert (out - ref).abs().max().item() <= 2e-3
    mask = torch.ones(64, 64, dtype=torch.bool, device="cuda").tril()[None].expand(2, -1, -1)
    masked = model(tokens.cuda(), mask=mask).cpu()
    assert (masked - ref).abs().max().item() <= 2e-3


@torch.no_grad()
def test_cuda_generation_cache_matches_no_cache():
    model = _model("mistral").cuda()
    prompt = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1)).cuda()
    assert torch.equal(generate(model, prompt, 12), generate(model, prompt, 12, use_cache=False))
