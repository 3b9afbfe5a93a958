"""Every family's logits match HF transformers on the same weights, both ways."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import FAMILIES, VOCAB, hf_model_from, tiny_hf_model

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner, tuner_to_hf

TOL = 1e-4


def _tuner_from_hf(hf, cfg, mt):
    model = build_model_from_hf_config(cfg, mt).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), mt, cfg), strict=True)
    return model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
    hf, cfg, mt = tiny_hf_model(request.param)
    return request.param, hf, cfg, mt, _tuner_from_hf(hf, cfg, mt)


@torch.no_grad()
def test_logits_match_hf(pair):
    _, hf, _, _, model = pair
    gen = torch.Generator().manual_seed(1)
    for s in (1, 20, 64):  # 20 and 64 go past the tiny sliding windows (8)
        tokens = torch.randint(0, VOCAB, (2, s), generator=gen)
        ref = hf(tokens).logits
        out = model(tokens)
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= TOL, s


@torch.no_grad()
def test_logits_match_hf_with_padding_mask(pair):
    _, hf, _, _, model = pair
    gen = torch.Generator().manual_seed(2)
    s, lengths = 24, [24, 13]
    tokens = torch.randint(3, VOCAB, (2, s), generator=gen)
    valid = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]
    tokens[~valid] = 0  # right padding
    ref = hf(tokens, attention_mask=valid.long()).logits
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    mask = causal[None] & valid[:, None, :]
    out = model(tokens, mask=mask)
    assert (out - ref)[valid].abs().max().item() <= TOL


@torch.no_grad()
def test_roundtrip_to_hf_gives_same_logits(pair):
    family, hf, cfg, mt, model = pair
    sd = tuner_to_hf(model.state_dict(), mt, cfg)
    expected_keys = set(hf.state_dict())
    if cfg.get("tie_word_embeddings"):
        expected_keys.discard("lm_head.weight")
    assert set(sd) == expected_keys
    hf2 = hf_model_from(family, sd)
    tokens = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(3))
    assert (hf2(tokens).logits - hf(tokens).logits).abs().max().item() <= TOL


@torch.no_grad()
def test_hidden_then_project_is_forward(pair):
    _, _, _, _, model = pair
    tokens = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.project(model.hidden(tokens)), model(tokens), rtol=0, atol=0)


@torch.no_grad()
def test_input_pos_matches_default_positions(pair):
    _, _, _, _, model = pair
    tokens = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(5))
    pos = torch.arange(11)[None].expand(2, 11)
    torch.testing.assert_close(model(tokens, input_pos=pos), model(tokens), rtol=0, atol=1e-6)


@torch.no_grad()
def test_hf_config_from_model_builds_the_same_hf_model(pair):
    import transformers

    from tuner.checkpoint.hf_config import hf_config_from_model

    family, hf, cfg, mt, model = pair
    out_cfg = hf_config_from_model(model, mt, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = transformers.AutoConfig.for_model(out_cfg.pop("model_type"), **out_cfg, attn_implementation="eager")
    hf2 = transformers.AutoModelForCausalLM.from_config(config).eval()
    missing, unexpected = hf2.load_state_dict(tuner_to_hf(model.state_dict(), mt, cfg), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    tokens = torch.randint(0, VOCAB, (2, 30), generator=torch.Generator().manual_seed(6))
    assert (hf2(tokens).logits - hf(tokens).logits).abs().max().item() <= TOL
