"""FP8 base weights (``base_dtype: fp8``) on CPU: the rowwise quantization against torchao's, the
round trip and scale layout, the GEMMs of `linear_fp8` (emulated here) against their formula and
against the dense linear, the module storage and its load hook, and the errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuner.errors import ConfigError
from tuner.peft import LoRALinear
from tuner.quantization import (
    check_base_dtype,
    dequantize_fp8,
    fp8,
    get_fp8_weight,
    has_fp8_weight,
    linear_fp8,
    quantize_fp8,
)
from tuner.quantization.fp8 import FP8_DTYPE, FP8_MAX, check_fp8_device, quantize_rows
from tuner.quantization.fp8_storage import FP8_DEFAULT, FP8Linear

MLP = ("mlp.w1", "mlp.w2", "mlp.w3")


def _weight(out_dim: int = 48, in_dim: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_dim, in_dim, generator=g) * torch.logspace(-3, 1, out_dim)[:, None]  # rows of any scale
    w[3] = 0.0  # an all-zero row
    return w


def test_rowwise_quantization_is_torchaos_bit_for_bit():
    from torchao.float8.config import ScalingGranularity
    from torchao.float8.float8_utils import tensor_to_scale, to_fp8_saturated

    for t in (_weight(), _weight(7, 80, seed=1).to(torch.bfloat16)):
        q, scale = quantize_rows(t)
        ao_scale = tensor_to_scale(t, FP8_DTYPE, scaling_granularity=ScalingGranularity.AXISWISE, axiswise_dim=-1)
        ao_q = to_fp8_saturated(t.to(torch.float32) * ao_scale, FP8_DTYPE)
        assert q.dtype == FP8_DTYPE and scale.dtype == torch.float32 and scale.shape == (t.shape[0], 1)
        assert torch.equal(q.view(torch.uint8), ao_q.view(torch.uint8))
        assert torch.equal(scale, ao_scale.reciprocal())


def test_round_trip_and_scale_layout():
    w = _weight()
    q = quantize_fp8(w, torch.bfloat16)
    assert q.data.shape == w.shape and q.scale.shape == (w.shape[0],) and q.scale.dtype == torch.float32
    # each row's largest magnitude is stored as e4m3's largest value, so it comes back (almost) exactly
    amax = w.abs().amax(1)
    assert torch.equal(q.data.float().abs().amax(1)[amax > 0], torch.full_like(amax[amax > 0], FP8_MAX))
    torch.testing.assert_close(q.data.float().abs().amax(1) * q.scale, amax, rtol=1e-6, atol=0)
    back = dequantize_fp8(q)
    assert back.dtype == torch.bfloat16 and torch.equal(back[3], torch.zeros_like(back[3]))
    # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normal values, absolute 2^-10 * scale below
    err = (dequantize_fp8(quantize_fp8(w)) - w).abs()
    bound = torch.maximum(w.abs() * 2**-4, q.scale[:, None] * 2**-10) * (1 + 1e-6)
    assert (err <= bound).all()
    assert err.max() > 0  # it does round


def _reference_linear(x: torch.Tensor, w_q, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FP8 forward and input gradient written out in float64 from their definitions."""
    x2 = x.reshape(-1, x.shape[-1])
    xq, xs = quantize_rows(x2)
    w = w_q.data.double() * w_q.scale.double()[:, None]
    y = (xq.double() * xs.double()) @ w.t()
    g = grad.reshape(-1, grad.shape[-1])
    gq, gs = quantize_rows(g.float() * w_q.scale)
    dx = (gq.double() * gs.double()) @ w_q.data.double()
    return y.view(*x.shape[:-1], -1), dx.view(x.shape)


def test_linear_fp8_gemms_emulated_match_their_formula_and_the_dense_linear():
    torch.manual_seed(0)
    w = torch.randn(48, 64) * 0.1
    q = quantize_fp8(w)
    x = torch.randn(2, 5, 64, requires_grad=True)
    bias = torch.randn(48, requires_grad=True)
    y = linear_fp8(x, q, bias)
    grad = torch.randn_like(y)
    y.backward(grad)
    ref_y, ref_dx = _reference_linear(x.detach(), q, grad)
    torch.testing.assert_close(y.double(), ref_y + bias.detach().double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), ref_dx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.grad, grad.sum((0, 1)))
    # and both are the dense linear up to FP8 rounding (a few percent, not more)
    xd = x.detach().clone().requires_grad_()
    dense = F.linear(xd, w, bias.detach())
    dense.backward(grad)
    assert (y - dense).norm() / dense.norm() < 0.05
    assert (x.grad - xd.grad).norm() / xd.grad.norm() < 0.05


def test_bf16_input_gradient_is_the_dequantized_weights_and_the_forward_stays_fp8():
    torch.manual_seed(0)
    w = torch.randn(48, 64) * 0.1
    q_all, q_fwd = quantize_fp8(w), quantize_fp8(w, fp8_input_grad=False)
    x = torch.randn(2, 5, 64)
    grad = torch.randn(2, 5, 48)
    outs = {}
    for name, q in (("all", q_all), ("fwd", q_fwd)):
        xi = x.clone().requires_grad_()
        y = linear_fp8(xi, q)
        y.backward(grad)
        outs[name] = (y.detach(), xi.grad)
    assert torch.equal(outs["all"][0], outs["fwd"][0])  # the same FP8 forward
    w_deq = q_fwd.data.double() * q_fwd.scale.double()[:, None]
    torch.testing.assert_close(outs["fwd"][1].double(), grad.double() @ w_deq, rtol=1e-6, atol=1e-6)
    # the output gradient is not rounded to e4m3: dX is the dequantized weight's (<= e4m3's 2^-4 per weight
    # from the dense one), nearer the dense dX than the all-FP8 recipe's
    dense_dx = grad @ w
    err_fwd = float((outs["fwd"][1] - dense_dx).norm() / dense_dx.norm())
    err_all = float((outs["all"][1] - dense_dx).norm() / dense_dx.norm())
    assert err_fwd < 0.03 and err_all > 1.2 * err_fwd


def test_base_dtype_values_choose_the_input_gradient_recipe():
    w = _weight(32, 16)
    for base_dtype, fp8_grad in (("fp8_all", True), ("fp8_fwd", False), ("fp8", FP8_DEFAULT == "fp8_all")):
        layer = LoRALinear(16, 32, rank=4, alpha=8, weight=w.clone(), base_dtype=base_dtype)
        assert get_fp8_weight(layer).fp8_input_grad is fp8_grad, base_dtype
        assert base_dtype in repr(layer)
    linear = torch.nn.Linear(16, 32, bias=True)
    frozen = FP8Linear(linear, fp8_input_grad=False)
    assert get_fp8_weight(frozen).fp8_input_grad is False and torch.equal(frozen.bias, linear.bias)
    x = torch.randn(3, 16)
    expected = linear_fp8(x, quantize_fp8(linear.weight.detach()), linear.bias.detach())
    assert torch.equal(frozen(x), expected) and (expected - linear(x)).norm() / linear(x).norm() < 0.05
    with torch.device("meta"):  # built empty, filled by a checkpoint's dense weight through the load hook
        empty = FP8Linear(torch.nn.Linear(16, 32, bias=False))
    empty.load_state_dict({"weight": linear.weight.detach()}, strict=False, assign=True)
    assert torch.equal(empty.weight_fp8, frozen.weight_fp8)


def test_lora_layer_stores_fp8_quantizes_on_load_and_keeps_its_bits_through_casts():
    w = _weight(32, 16)
    layer = LoRALinear(16, 32, rank=4, alpha=8, weight=w.clone(), base_dtype="fp8", init_lora_weights=False)
    assert has_fp8_weight(layer) and "weight" not in dict(layer.named_parameters())
    assert sorted(k for k in layer.state_dict() if not k.startswith("lora")) == ["weight_fp8", "weight_fp8_scale"]
    expected = quantize_fp8(w)
    assert torch.equal(layer.weight_fp8, expected.data.view(torch.uint8))
    # built on meta, then a dense checkpoint weight is quantized as it loads
    with torch.device("meta"):
        meta = LoRALinear(16, 32, rank=4, alpha=8, base_dtype="fp8")
    meta.load_state_dict({"weight": w}, strict=False, assign=True)
    assert torch.equal(get_fp8_weight(meta).data.view(torch.uint8), layer.weight_fp8)
    layer.to(torch.bfloat16)  # casts floating tensors: the stored bits must not change
    assert torch.equal(get_fp8_weight(layer).data.view(torch.uint8), expected.data.view(torch.uint8))
    assert torch.equal(get_fp8_weight(layer).scale, expected.scale)
    assert layer.base_weight().dtype == torch.float32  # the compute dtype it was built with


def test_dora_normalises_against_the_dequantized_fp8_weight():
    w = _weight(32, 16)
    layer = LoRALinear(16, 32, rank=4, alpha=8, weight=w.clone(), base_dtype="fp8", use_dora=True)
    base = dequantize_fp8(quantize_fp8(w))
    assert torch.equal(layer.base_weight(), base)
    expected = torch.linalg.norm(base + layer.scaling * layer.lora_b.weight @ layer.lora_a.weight, dim=1)
    torch.testing.assert_close(layer.magnitude.detach(), expected)
    assert not torch.allclose(expected, torch.linalg.norm(w, dim=1), rtol=1e-4)  # the FP8 base differs


def test_bad_base_dtype_values_and_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="unknown base_dtype 'fp88'.*did you mean 'fp8'") as e:
        check_base_dtype("fp88")
    assert "base in the model's dtype" in e.value.fix
    with pytest.raises(ConfigError, match="unknown base_dtype 'fp8-fwd'.*did you mean 'fp8_fwd'") as e:
        LoRALinear(16, 32, rank=4, alpha=8, base_dtype="fp8-fwd", quantize_base=True)
    assert "NF4 base computing in bf16" in e.value.fix
    # with an NF4 base it is no longer a clash: the base stays NF4 and computes in FP8 (test_nf4_fp8.py)
    assert check_base_dtype("fp8_fwd", quantize_base=True) == "fp8_fwd"
    with pytest.raises(ConfigError, match="pissa"):
        LoRALinear(16, 32, rank=4, alpha=8, base_dtype="fp8", init_lora_weights="pissa")


def test_a_gpu_without_fp8_or_odd_layer_sizes_is_a_config_error(monkeypatch):
    gpu = torch.device("cuda", 0)
    check_fp8_device(torch.device("cpu"), (33, 17))  # CPU emulates any shape
    monkeypatch.setattr(fp8, "scaled_mm_available", lambda device: False)
    with pytest.raises(ConfigError, match="compute capability 8.9") as e:
        check_fp8_device(gpu, (32, 16))
    assert "base_dtype" in e.value.fix
    monkeypatch.setattr(fp8, "scaled_mm_available", lambda device: True)
    check_fp8_device(gpu, (32, 16))
    with pytest.raises(ConfigError, match="multiples of 16.*\\[33, 16\\]"):
        check_fp8_device(gpu, (33, 16))


def test_vera_and_lora_builders_take_base_dtype():
    from tuner.models.smollm2 import lora_smollm2

    dims = dict(vocab_size=256, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128)
    tokens = torch.randint(0, 256, (2, 9))
    for variant in ({"use_vera": True, "lora_rank": 16}, {"lora_rank": 4}):
        models = []
        for base_dtype in (None, "fp8"):
            torch.manual_seed(0)
            models.append(lora_smollm2(["q_proj", "v_proj"], max_seq_len=64, base_dtype=base_dtype, **variant, **dims))
        dense, quantized = models
        # the adapted q/v and every frozen block linear (k, output_proj, MLP); not the output projection
        assert [n for n, m in quantized.named_modules() if has_fp8_weight(m)] == [
            f"layers.0.{m}" for m in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.output_proj", *MLP)
        ]
        k_proj = quantized.layers[0].attn.k_proj
        assert isinstance(k_proj, FP8Linear) and sorted(k_proj.state_dict()) == ["weight_fp8", "weight_fp8_scale"]
        with torch.no_grad():
            a, b = dense(tokens), quantized(tokens)
        assert 0 < (a - b).norm() / a.norm() < 0.05, variant  # the same model up to FP8 rounding
