"""Whole-model interop with HF PEFT over a tiny random LlamaForCausalLM (float32).

For each variant PEFT also has (LoRA, rsLoRA, DoRA, PiSSA, VeRA): tuner's exported adapter loads
with ``PeftModel.from_pretrained`` and gives tuner's logits; a PEFT-trained (randomised) adapter
loads into tuner and gives PEFT's logits; merged and unmerged tuner models agree and the merged
state dict, converted to HF, loads in transformers with the same logits.
"""

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, VeraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from tests.models.hf_tiny import TINY
from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner, tuner_to_hf
from tuner.checkpoint.peft_format import load_peft_adapter, load_peft_adapter_config, save_peft_adapter
from tuner.errors import TunerError
from tuner.peft import (
    apply_lora,
    clone_merged,
    get_adapter_params,
    get_adapter_state_dict,
    get_merged_lora_ckpt,
    is_adapter_key,
    validate_missing_and_unexpected_for_lora,
)

MT, R, ALPHA, ATOL = "LLAMA3", 4, 8, 1e-4
ATTN = ["q_proj", "k_proj", "v_proj", "output_proj"]
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj", "lm_head"]
VARIANTS = {
    "lora": {},
    "rslora": {"use_rslora": True},
    "dora": {"use_dora": True},
    "pissa": {"init_lora_weights": "pissa"},
    "vera": {"use_vera": True},
}


@pytest.fixture(scope="module")
def hf_base():
    torch.manual_seed(0)
    cfg = LlamaConfig(**dict(TINY, vocab_size=128, rms_norm_eps=1e-6, tie_word_embeddings=False))
    return LlamaForCausalLM(cfg).eval(), cfg.to_dict()


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(1)
    return torch.randint(0, 128, (2, 12))


def _tuner_base(hf, hf_config):
    model = build_model_from_hf_config(hf_config, MT).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), MT, hf_config))
    return model


def _randomize(params, scale=0.05):
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in params:
            if "magnitude" in name or "lambda" in name:
                p.mul_(1 + scale * torch.randn_like(p)).add_(scale * torch.randn_like(p))
            else:
                p.add_(scale * torch.randn_like(p))


@torch.no_grad()
def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("variant", VARIANTS)
def test_tuner_adapter_loads_in_peft(variant, hf_base, tokens, tmp_path):
    hf, hf_config = hf_base
    model = apply_lora(
        _tuner_base(hf, hf_config),
        ATTN,
        apply_lora_to_mlp=True,
        apply_lora_to_output=True,
        lora_rank=R,
        lora_alpha=ALPHA,
        **VARIANTS[variant],
    )
    _randomize(get_adapter_params(model).items())
    assert all(p.abs().sum() > 0 for n, p in get_adapter_params(model).items() if "lora_b" in n or "lambda_b" in n)
    logits = model(tokens)
    assert _max_diff(logits, hf(tokens).logits) > 1e-2  # the adapter changes the output

    save_peft_adapter(model, tmp_path, MT, hf_config, {"base_model_name_or_path": "tiny-llama"})
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["base_model_name_or_path"] == "tiny-llama"
    assert sorted(cfg["target_modules"]) == sorted(HF_TARGETS)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path).eval()
    assert _max_diff(peft_model(tokens).logits, logits) <= ATOL
    if variant in ("lora", "dora", "vera"):  # the checkpointer's path: an adapter state dict + the recipe's settings
        save_peft_adapter(
            get_adapter_state_dict(model.state_dict()), tmp_path / "sd", MT, hf_config, {"lora_alpha": ALPHA}
        )
        assert json.loads((tmp_path / "sd" / "adapter_config.json").read_text()) == cfg | {
            "base_model_name_or_path": None
        }

    # merged == unmerged; the merged state dict is a plain HF checkpoint with the same logits
    merged = clone_merged(model)
    assert _max_diff(merged(tokens), logits) <= ATOL
    hf_merged = LlamaForCausalLM(LlamaConfig(**hf_config)).eval()
    hf_merged.load_state_dict(tuner_to_hf(merged.state_dict(), MT, hf_config))
    assert _max_diff(hf_merged(tokens).logits, logits) <= ATOL
    # the state-dict merge gives the same weights
    sd_merged = get_merged_lora_ckpt(model.state_dict(), R, ALPHA, use_rslora=variant == "rslora")
    assert sd_merged.keys() == merged.state_dict().keys()
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(sd_merged[k], v, atol=1e-5, rtol=1e-5)


def _peft_trained(hf, variant, tmp_path):
    base = copy.deepcopy(hf)
    if variant == "vera":
        config = VeraConfig(r=R, target_modules=HF_TARGETS, projection_prng_key=5)
    else:
        kw = VARIANTS[variant]
        config = LoraConfig(
            r=R,
            lora_alpha=ALPHA,
            target_modules=HF_TARGETS,
            use_dora=kw.get("use_dora", False),
            use_rslora=kw.get("use_rslora", False),
            init_lora_weights=kw.get("init_lora_weights", True),
        )
    peft_model = get_peft_model(base, config)
    out = tmp_path / "peft"
    if variant == "pissa":  # PEFT's documented PiSSA flow: keep the initial adapter, convert to LoRA on save
        peft_model.peft_config["default"].init_lora_weights = True
        peft_model.save_pretrained(tmp_path / "pissa_init")
        peft_model.peft_config["default"].init_lora_weights = "pissa"
    _randomize([(n, p) for n, p in peft_model.named_parameters() if p.requires_grad])
    peft_model.eval()
    if variant == "pissa":
        peft_model.save_pretrained(out, path_initial_model_for_weight_conversion=tmp_path / "pissa_init")
    else:
        peft_model.save_pretrained(out)
    return peft_model, out


@pytest.mark.parametrize("variant", VARIANTS)
def test_peft_adapter_loads_in_tuner(variant, hf_base, tokens, tmp_path):
    hf, hf_config = hf_base
    peft_model, out = _peft_trained(hf, variant, tmp_path)
    expected = peft_model(tokens).logits
    settings = load_peft_adapter_config(out)
    assert settings["lora_attn_modules"] == ATTN and settings["apply_lora_to_mlp"] and settings["apply_lora_to_output"]
    model = apply_lora(_tuner_base(hf, hf_config), **settings)
    adapter = load_peft_adapter(out, MT, hf_config)
    missing, unexpected = model.load_state_dict(adapter, strict=False)
    validate_missing_and_unexpected_for_lora(lora_missing=missing, lora_unexpected=unexpected)
    assert sorted(k for k in adapter if is_adapter_key(k)) == sorted(get_adapter_state_dict(model.state_dict()))
    assert set(adapter) - set(get_adapter_state_dict(adapter)) <= {"output.weight"}  # PEFT may save lm_head's base
    assert _max_diff(model(tokens), expected) <= ATOL
    assert _max_diff(model(tokens), hf(tokens).logits) > 1e-2  # the adapter is not a no-op
    if variant == "pissa":  # PEFT's converted PiSSA is a rank-2r LoRA over the original base
        assert settings["lora_rank"] == 2 * R


def test_pissa_unconverted_applies_over_residual(hf_base, tokens, tmp_path):
    hf, hf_config = hf_base
    model = apply_lora(
        _tuner_base(hf, hf_config), ["q_proj", "v_proj"], lora_rank=R, lora_alpha=ALPHA, init_lora_weights="pissa"
    )
    _randomize(get_adapter_params(model).items())
    save_peft_adapter(model, tmp_path, MT, hf_config, convert_pissa=False)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["r"] == R and cfg["init_lora_weights"] is True  # PEFT must not redo the SVD on load
    residual = LlamaForCausalLM(LlamaConfig(**hf_config)).eval()
    base_sd = {
        k: v
        for k, v in model.state_dict().items()
        if not k.endswith(("lora_a.weight", "lora_b.weight", "pissa_init_a", "pissa_init_b"))
    }
    residual.load_state_dict(tuner_to_hf(base_sd, MT, hf_config))
    peft_model = PeftModel.from_pretrained(residual, tmp_path).eval()
    assert _max_diff(peft_model(tokens).logits, model(tokens)) <= ATOL


def test_interop_errors(hf_base, tmp_path):
    hf, hf_config = hf_base
    with pytest.raises(TunerError, match="no adapter_config.json"):
        load_peft_adapter(tmp_path, MT, hf_config)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "target_modules": ["q_proj"]}))
    with pytest.raises(TunerError, match="IA3"):
        load_peft_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "gate_proj"]})
    )
    with pytest.raises(TunerError, match="only"):
        load_peft_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "rank_pattern": {"q_proj": 8}})
    )
    with pytest.raises(TunerError, match="rank_pattern"):
        load_peft_adapter_config(tmp_path)
    with pytest.raises(TunerError, match="lora_alpha"):
        save_peft_adapter({"layers.0.attn.q_proj.lora_a.weight": torch.zeros(2, 2)}, tmp_path / "x", MT, hf_config)
    pissa_dora = apply_lora(
        _tuner_base(hf, hf_config), ["q_proj"], lora_rank=R, lora_alpha=ALPHA, use_dora=True, init_lora_weights="pissa"
    )
    with pytest.raises(TunerError, match="convert_pissa=False"):
        save_peft_adapter(pissa_dora, tmp_path / "pd", MT, hf_config)
    with pytest.raises(TunerError, match="no adapter weights"):
        save_peft_adapter(
            {"norm.scale": torch.zeros(2)}, tmp_path / "x", MT, hf_config, {"lora_rank": 4, "lora_alpha": 8}
        )
    with pytest.raises(TunerError, match="missing|lacks adapter"):
        validate_missing_and_unexpected_for_lora(lora_missing=["layers.0.attn.q_proj.lora_a.weight"])
    with pytest.raises(TunerError, match="base checkpoint lacks"):
        validate_missing_and_unexpected_for_lora(base_missing=["layers.0.attn.q_proj.weight"])
    with pytest.raises(TunerError, match="does not"):
        validate_missing_and_unexpected_for_lora(base_unexpected=["foo.weight"])


def test_tied_output_is_refused(tokens):
    cfg = LlamaConfig(**dict(TINY, vocab_size=128, num_hidden_layers=1, tie_word_embeddings=True)).to_dict()
    model = build_model_from_hf_config(cfg, MT)
    with pytest.raises(TunerError, match="tied"):
        apply_lora(model, ["q_proj"], apply_lora_to_output=True)
