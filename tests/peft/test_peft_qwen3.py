"""Qwen3 adapters interoperate with HF PEFT over a tiny random Qwen3ForCausalLM (float32): tuner's
adapter on every linear layer (the q/k norms stay frozen) loads with ``PeftModel.from_pretrained``
and gives tuner's logits, and a PEFT-trained adapter loads back into tuner with PEFT's logits."""

import copy

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from tests.models.hf_tiny import VOCAB, tiny_hf_model
from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.checkpoint.peft_format import load_peft_adapter, load_peft_adapter_config, save_peft_adapter
from tuner.peft import apply_lora, get_adapter_params, get_adapter_state_dict

ATOL = 1e-4
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj", "lm_head"]
TOKENS = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def _tuner_base(hf, config, mt):
    model = build_model_from_hf_config(config, mt).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), mt, config))
    return model


def _randomize(params):
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@torch.no_grad()
def test_tuner_qwen3_adapter_loads_in_peft(tmp_path):
    hf, config, mt = tiny_hf_model("qwen3")
    model = apply_lora(
        _tuner_base(hf, config, mt),
        ["q_proj", "k_proj", "v_proj", "output_proj"],
        apply_lora_to_mlp=True,
        apply_lora_to_output=True,
        lora_rank=4,
        lora_alpha=8,
    )
    _randomize(get_adapter_params(model).values())
    logits = model(TOKENS)
    assert (logits - hf(TOKENS).logits).abs().max() > 1e-2  # the adapter changes the output
    assert not any("norm" in n for n in get_adapter_params(model))
    save_peft_adapter(model, tmp_path, mt, config)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path).eval()
    assert sorted(peft_model.peft_config["default"].target_modules) == sorted(HF_TARGETS)
    assert (peft_model(TOKENS).logits - logits).abs().max() <= ATOL


@torch.no_grad()
def test_peft_qwen3_adapter_loads_in_tuner(tmp_path):
    hf, config, mt = tiny_hf_model("qwen3")
    peft_model = get_peft_model(copy.deepcopy(hf), LoraConfig(r=4, lora_alpha=8, target_modules=HF_TARGETS))
    _randomize(p for p in peft_model.parameters() if p.requires_grad)
    peft_model.eval().save_pretrained(tmp_path)
    expected = peft_model(TOKENS).logits
    settings = load_peft_adapter_config(tmp_path)
    model = apply_lora(_tuner_base(hf, config, mt), **settings).eval()
    adapter = load_peft_adapter(tmp_path, mt, config)
    assert sorted(k for k in adapter if "lora_" in k) == sorted(get_adapter_state_dict(model.state_dict()))
    model.load_state_dict(adapter, strict=False)
    assert (model(TOKENS) - expected).abs().max() <= ATOL
    assert (model(TOKENS) - hf(TOKENS).logits).abs().max() > 1e-2
