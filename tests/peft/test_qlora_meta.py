"""QLoRA (NF4 base) against PEFT over bitsandbytes' Linear4bit, meta-device building, summaries."""

import copy

import pytest
import torch
from torch import nn

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.errors import TunerError
from tuner.peft import (
    LoRALinear,
    apply_lora,
    get_adapter_params,
    get_merged_lora_ckpt,
    initialize_adapters,
    merge_lora_weights,
    set_trainable_params,
    trainable_params_summary,
)

IN, OUT, R, ALPHA = 128, 64, 4, 8
HF_CONFIG = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
}


@pytest.mark.parametrize("use_dora", [False, True])
def test_qlora_layer_matches_peft_over_bnb_linear4bit(use_dora):
    bnb = pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Linear(IN, OUT, bias=False)
    q = bnb.nn.Linear4bit(IN, OUT, bias=False, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(
        base.weight.data.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4"
    )
    q = q.to("cpu")
    holder = nn.Module()
    holder.proj = q
    holder.forward = lambda x: holder.proj(x)
    ref = get_peft_model(holder, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["proj"], use_dora=use_dora))
    ours = LoRALinear(IN, OUT, R, ALPHA, use_dora=use_dora, quantize_base=True, weight=base.weight.detach().clone())
    layer = ref.base_model.model.proj
    with torch.no_grad():
        # same dequantized base
        from peft.utils.integrations import dequantize_module_weight

        torch.testing.assert_close(ours.base_weight(), dequantize_module_weight(layer.get_base_layer()))
        a, b = torch.randn(R, IN) * 0.1, torch.randn(OUT, R) * 0.1
        layer.lora_A["default"].weight.copy_(a), ours.lora_a.weight.copy_(a)
        layer.lora_B["default"].weight.copy_(b), ours.lora_b.weight.copy_(b)
        if use_dora:  # both initialised from the dequantized base
            torch.testing.assert_close(ours.magnitude, layer.lora_magnitude_vector["default"].weight)
    x = torch.randn(3, IN)
    torch.testing.assert_close(ours(x), layer(x), atol=1e-5, rtol=1e-5)
    assert "weight" not in dict(ours.named_parameters())
    assert set(ours.state_dict()) >= {"weight_nf4", "lora_a.weight", "lora_b.weight"}


def _model():
    return build_model_from_hf_config(HF_CONFIG, "LLAMA3").eval()


@pytest.mark.parametrize(
    "variant",
    [{}, {"use_dora": True}, {"quantize_base": True}, {"use_dora": True, "quantize_base": True}, {"use_vera": True}],
)
def test_meta_build_then_load_equals_eager(variant):
    torch.manual_seed(0)
    dense = _model()
    base_sd = dense.state_dict()
    eager = apply_lora(
        copy.deepcopy(dense), ["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=R, lora_alpha=ALPHA, **variant
    )
    with torch.device("meta"):
        lazy = apply_lora(
            _model(), ["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=R, lora_alpha=ALPHA, **variant
        )
    with pytest.raises(TunerError, match="meta"):
        initialize_adapters(lazy)
    missing, unexpected = lazy.load_state_dict(base_sd, strict=False, assign=True)
    assert not unexpected and all("lora" in k or "magnitude" in k or "vera" in k for k in missing)
    lazy.rope.to_empty(device="cpu")  # the zoo's non-persistent rope tables
    lazy.rope_init()
    initialize_adapters(lazy)
    eager_sd = eager.state_dict()
    lazy_sd = lazy.state_dict()
    assert eager_sd.keys() == lazy_sd.keys()
    for k in eager_sd:  # base weights (NF4 included) and the base-derived adapter parts agree
        if not k.endswith(("lora_a.weight", "lora_b.weight")):
            torch.testing.assert_close(lazy_sd[k], eager_sd[k], msg=k)
    with torch.no_grad():
        for k, p in get_adapter_params(lazy).items():
            p.copy_(eager_sd[k] + 0.05 * torch.randn_like(p))
            eager.get_parameter(k).copy_(p)
    tokens = torch.randint(0, 96, (2, 8))
    torch.testing.assert_close(lazy(tokens), eager(tokens))


def test_qlora_merge_and_summary():
    torch.manual_seed(0)
    model = apply_lora(
        _model(),
        ["q_proj", "k_proj", "v_proj", "output_proj"],
        apply_lora_to_mlp=True,
        lora_rank=R,
        lora_alpha=ALPHA,
        quantize_base=True,
    )
    params = get_adapter_params(model)
    set_trainable_params(model, params)
    n_adapter = sum(p.numel() for p in params.values())
    n_total = sum(p.numel() for p in _model().parameters())
    pct = 100 * n_adapter / (n_total + n_adapter)
    summary = trainable_params_summary(model)
    assert summary.startswith(f"trainable {pct:.2f}% (") and summary.endswith(f" / {(n_total + n_adapter) / 1e3:.3g}K)")
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn_like(p))
    with pytest.raises(TunerError, match="dequantized_state_dict"):
        get_merged_lora_ckpt(model.state_dict(), R, ALPHA)
    from tuner.quantization import dequantized_state_dict

    sd = get_merged_lora_ckpt(dequantized_state_dict(model), R, ALPHA)
    tokens = torch.randint(0, 96, (2, 8))
    expected = model(tokens)
    merged = merge_lora_weights(model)
    assert all(type(m) is not LoRALinear for m in merged.modules())
    torch.testing.assert_close(merged(tokens), expected, atol=1e-5, rtol=1e-5)
    plain = _model()
    plain.load_state_dict(sd)
    torch.testing.assert_close(plain(tokens), expected, atol=1e-5, rtol=1e-5)


def test_summary_format():
    model = nn.Linear(1000, 1000)
    model.weight.requires_grad_(False)
    assert trainable_params_summary(model) == "trainable 0.10% (1K / 1M)"
    big = nn.Module()
    big.register_parameter("w", nn.Parameter(torch.empty(0)))
    assert trainable_params_summary(big) == "trainable 0.00% (0 / 0)"
