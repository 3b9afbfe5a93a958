"""QLoRA with FP8 compute (a ``qlora_*`` builder with ``base_dtype: fp8``) on CPU, FP8 GEMMs emulated:
an NF4 linear computing in FP8 is exactly `linear_fp8` on the per-row quantization of its dequantized
weight (forward and input gradient, both recipes, with or without keeping the FP8 copy for backward)
and within FP8 rounding of the plain NF4 linear; the built model stores the very same NF4 base as plain
QLoRA (bytes, keys) and trains its adapters; the MLP's gate/up share one quantization of their input;
DoRA normalises against the dequantized NF4 weight; compiled, no copy of the weight is kept for
backward, and under activation checkpointing the recompute's FP8 weight serves the backward when kept.
The recipe end to end (saving, the adapter format) is in tests/recipes/test_lora_fp8.py, FSDP2 in
tests/recipes/test_distributed.py."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from tests.autograd_helpers import saved_tensor_shapes
from tuner.models.smollm2 import qlora_smollm2
from tuner.peft import LoRALinear, get_adapter_params, set_trainable_params
from tuner.quantization import (
    FP8Weight,
    compute_nf4_in_fp8,
    dequantize_nf4,
    fp8,
    get_nf4_weight,
    has_fp8_weight,
    has_nf4_weight,
    keep_dense_weights_for_backward,
    linear_fp8,
    nf4_computes_in_fp8,
    quantize_nf4,
)
from tuner.quantization.fp8 import quantize_rows

DIMS = dict(vocab_size=256, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128)
LORA = dict(lora_rank=4, lora_alpha=8, max_seq_len=64)
RECIPES = {"fp8_all": True, "fp8_fwd": False, "fp8": True}  # base_dtype -> FP8 input gradient


def _fp8_of_nf4(module: torch.nn.Module, fp8_input_grad: bool) -> FP8Weight:
    """The FP8 weight the brief defines: the NF4 weight dequantized, then `quantize_rows`."""
    data, scale = quantize_rows(dequantize_nf4(get_nf4_weight(module)))
    return FP8Weight(data, scale.view(-1), torch.bfloat16, fp8_input_grad)


def _forward_backward(fn, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = fn(x)
    y.backward(grad)
    return y.detach(), x.grad


@pytest.mark.parametrize("save_dense", [False, True], ids=["requantize_in_backward", "keep_fp8_copy"])
@pytest.mark.parametrize("base_dtype", ["fp8_all", "fp8_fwd"])
def test_nf4_linear_in_fp8_is_linear_fp8_of_the_dequantized_weight(base_dtype, save_dense):
    torch.manual_seed(0)
    w = torch.randn(48, 64) * torch.logspace(-2, 0, 48)[:, None]  # rows of different scales
    layer = LoRALinear(64, 48, rank=4, alpha=8, weight=w.clone(), bias=torch.randn(48), quantize_base=True)
    plain_out = layer.base_linear
    layer = layer.to(torch.bfloat16)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    grad = torch.randn(2, 5, 48, dtype=torch.bfloat16)
    plain = _forward_backward(plain_out, x, grad)  # the NF4 base computing in bf16
    compute_nf4_in_fp8(layer, RECIPES[base_dtype])
    keep_dense_weights_for_backward(layer, save_dense)
    assert nf4_computes_in_fp8(layer) and not has_fp8_weight(layer)
    ours = _forward_backward(layer.base_linear, x, grad)
    bias = layer.bias.detach()
    ref = _forward_backward(lambda t: linear_fp8(t, _fp8_of_nf4(layer, RECIPES[base_dtype]), bias), x, grad)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])  # bit for bit, forward and dX
    for a, b in zip(ours, plain):  # and the NF4 (bf16) linear up to FP8 rounding (2^-4 a value)
        assert 0 < float((a.float() - b.float()).norm() / b.float().norm()) < 0.05
    compute_nf4_in_fp8(layer, None)  # switched back: the plain NF4 linear again
    assert not nf4_computes_in_fp8(layer) and torch.equal(_forward_backward(layer.base_linear, x, grad)[0], plain[0])


def test_the_fp8_input_gradient_recipes_differ_only_in_backward():
    torch.manual_seed(0)
    q = quantize_nf4(torch.randn(32, 48) * 0.1, torch.bfloat16)
    x, grad = torch.randn(3, 48, dtype=torch.bfloat16), torch.randn(3, 32, dtype=torch.bfloat16)
    from tuner.quantization import linear_nf4_fp8

    out = {g: _forward_backward(lambda t, g=g: linear_nf4_fp8(t, q, fp8_input_grad=g), x, grad) for g in (True, False)}
    assert torch.equal(out[True][0], out[False][0]) and not torch.equal(out[True][1], out[False][1])
    # fp8_fwd's dX is dY @ the FP8 weight dequantized, in bf16
    w = FP8Weight(*quantize_rows(dequantize_nf4(q)), torch.bfloat16)
    deq = (w.data.float() * w.scale.float()).to(torch.bfloat16)
    assert torch.equal(out[False][1], grad @ deq)


def _qlora(base_dtype: str | None, seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = {**LORA, **DIMS, **options}
    model = qlora_smollm2(["q_proj", "v_proj"], apply_lora_to_mlp=True, base_dtype=base_dtype, **kw)
    set_trainable_params(model, get_adapter_params(model))
    return model


def test_qlora_builder_with_base_dtype_keeps_the_nf4_base_and_trains():
    plain, ours = _qlora(None), _qlora("fp8")
    plain_sd, sd = plain.state_dict(), ours.state_dict()
    assert plain_sd.keys() == sd.keys() and not any("fp8" in k for k in sd)
    for key, value in plain_sd.items():  # the same NF4 payload (same bytes), the same adapters, dense k_proj
        assert value.dtype == sd[key].dtype and torch.equal(value, sd[key]), key
    nf4 = [n for n, m in ours.named_modules() if has_nf4_weight(m)]
    assert nf4 == [n for n, m in ours.named_modules() if nf4_computes_in_fp8(m)] and len(nf4) == 2 * 5
    assert not any(has_fp8_weight(m) for m in ours.modules())
    assert type(ours.layers[0].attn.k_proj) is torch.nn.Linear  # not adapted: dense, as in plain QLoRA
    assert not any(nf4_computes_in_fp8(m) for m in plain.modules())

    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():  # non-zero B, so that every adapter gets a gradient
        for model in (plain, ours):
            for name, p in model.named_parameters():
                if "lora_b" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    losses = {}
    for name, model in (("plain", plain), ("ours", ours)):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        losses[name] = float(loss.detach())
    assert torch.isfinite(torch.tensor(losses["ours"])) and abs(losses["ours"] - losses["plain"]) < 0.05
    grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1e-2).step()
    after = ours.state_dict()
    assert all(torch.equal(after[k], sd[k]) for k in sd if ".lora_" not in k)  # the base never changes


def test_gate_and_up_share_their_input_quantization_bit_for_bit(monkeypatch):
    calls = collections.Counter()
    real = fp8.quantize_rows

    def counting(t):
        calls[tuple(t.shape)] += 1
        return real(t)

    monkeypatch.setattr(fp8, "quantize_rows", counting)
    tokens = torch.randint(0, 256, (2, 9))
    out = {}
    for shared in (True, False):
        model = _qlora("fp8_all", fp8_shared_input=shared)
        calls.clear()
        with torch.no_grad():
            out[shared] = model(tokens)
        out[shared, "x"] = calls[(18, 64)]  # the activations' quantizations (input width 64: q, v, w1, w3)
    assert torch.equal(out[True], out[False])
    # per layer: q and v each quantize x (k_proj is a dense linear, so q/k/v share nothing), w1/w3 share one
    assert out[True, "x"] == 2 * 3 and out[False, "x"] == 2 * 4


def test_dora_over_an_nf4_base_computing_in_fp8_normalises_against_the_nf4_weight():
    torch.manual_seed(0)
    w = torch.randn(32, 16) * 0.1
    kw = dict(rank=4, alpha=8, quantize_base=True, use_dora=True)
    ours = LoRALinear(16, 32, weight=w.clone(), base_dtype="fp8", **kw)
    torch.manual_seed(0)
    plain = LoRALinear(16, 32, weight=w.clone(), **kw)
    base = dequantize_nf4(get_nf4_weight(ours))
    assert torch.equal(ours.base_weight(), base) and torch.equal(ours.magnitude, plain.magnitude)
    expected = torch.linalg.norm(base + ours.scaling * ours.lora_b.weight @ ours.lora_a.weight, dim=1)
    torch.testing.assert_close(ours.magnitude.detach(), expected)
    x = torch.randn(3, 16)
    y, y_plain = ours(x), plain(x)  # the FP8 GEMM inside DoRA's forward, within FP8 rounding of QLoRA's
    assert 0 < float((y - y_plain).detach().norm() / y_plain.detach().norm()) < 0.05
    y.sum().backward()
    assert ours.magnitude.grad is not None and ours.lora_a.weight.grad is not None


def test_pissa_over_an_nf4_base_computing_in_fp8_builds_as_qlora_pissa():
    torch.manual_seed(0)
    w = torch.randn(32, 16) * 0.1
    kw = dict(rank=4, alpha=8, quantize_base=True, init_lora_weights="pissa")
    ours, plain = LoRALinear(16, 32, weight=w.clone(), base_dtype="fp8_fwd", **kw), LoRALinear(16, 32, weight=w, **kw)
    assert nf4_computes_in_fp8(ours) and torch.equal(ours.weight_nf4, plain.weight_nf4)  # the same residual
    x = torch.randn(3, 16)
    assert 0 < float((ours(x) - plain(x)).norm() / plain(x).norm()) < 0.05


@pytest.mark.parametrize("save_dense", [False, True], ids=["requantize_in_backward", "keep_fp8_copy"])
def test_a_compiled_layer_is_one_graph_with_the_eager_numbers(save_dense):
    model = _qlora("fp8_all", num_layers=1)
    keep_dense_weights_for_backward(model, save_dense)
    layer = model.layers[0]
    x = model.tok_embeddings(torch.randint(0, 256, (2, 16))).detach().requires_grad_()
    eager = _forward_backward(lambda t: layer(t, rope=None), x.detach(), torch.ones(2, 16, 64))
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    try:
        ours = _forward_backward(lambda t: compiled(t, rope=None), x.detach(), torch.ones(2, 16, 64))
    finally:
        torch._dynamo.reset()
    assert torch.equal(ours[0], eager[0])
    torch.testing.assert_close(ours[1], eager[1], rtol=1e-5, atol=1e-5)  # summed in another order


def test_compiled_layers_keep_no_copy_of_the_weight_for_backward():
    """As for the plain NF4 linear (tests/quantization/test_nf4.py): compiled, the forward's FP8 (or
    dense) weight must not be kept for backward, which for a model is every layer's weights."""
    torch.manual_seed(0)
    kw = dict(rank=4, alpha=8, quantize_base=True, base_dtype="fp8_all", dtype=torch.float32)
    layers = torch.nn.Sequential(LoRALinear(128, 96, **kw), LoRALinear(96, 128, **kw))
    torch._dynamo.reset()
    compiled = torch.compile(layers, fullgraph=True)
    x = torch.randn(4, 128, requires_grad=True)
    try:
        with saved_tensor_shapes() as saved:
            y = compiled(x)
        y.sum().backward()
    finally:
        torch._dynamo.reset()
    assert saved and x.grad is not None
    assert not {(96, 128), (128, 96)} & set(saved), saved


@pytest.mark.parametrize("keep", [True, False], ids=["keep_fp8_copy", "requantize_in_backward"])
def test_checkpointed_layers_make_the_fp8_weight_twice_per_step_when_kept(monkeypatch, keep):
    """With activation checkpointing the recompute's FP8 weight serves the backward (2 FP8 weights made
    per weight and step, the same gradients); without keeping it, the backward makes it again (3)."""
    from tuner.quantization import nf4 as nf4_module
    from tuner.training.memory import apply_activation_checkpointing

    def two_layers() -> torch.nn.Module:
        torch.manual_seed(0)
        kw = dict(rank=2, alpha=4, quantize_base=True, base_dtype="fp8", init_lora_weights=False)
        model = torch.nn.Module()
        model.layers = torch.nn.ModuleList(torch.nn.Sequential(LoRALinear(32, 32, **kw)) for _ in range(2))
        model.forward = lambda x: model.layers[1](model.layers[0](x))
        return model

    x = torch.randn(3, 32, requires_grad=True)
    plain = two_layers()
    plain(x).square().sum().backward()
    reference = [p.grad for p in plain.parameters() if p.requires_grad]
    model = two_layers()
    apply_activation_checkpointing(model, keep_nf4_dense=keep)
    calls = []
    real = nf4_module._nf4_as_fp8  # the FP8 weight, made in two steps or by the fused kernel
    monkeypatch.setattr(nf4_module, "_nf4_as_fp8", lambda *a, **k: calls.append(1) or real(*a, **k))
    model(x).square().sum().backward()
    assert len(calls) == 2 * (2 if keep else 3)
    for got, want in zip([p.grad for p in model.parameters() if p.requires_grad], reference):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _kept_row_scales(module):
    return module._buffers["weight_fp8_row_scales"].view(torch.float32)


def _fresh_row_scales(module):
    from tuner.quantization.fp8 import row_scales

    to_fp8, scale = row_scales(dequantize_nf4(get_nf4_weight(module)))
    return torch.stack((to_fp8.view(-1), scale.view(-1)))


def test_kept_fp8_row_scales_follow_every_way_the_nf4_weight_changes(monkeypatch):
    """QLoRA computing in FP8 keeps each frozen weight's row scales (computed once, not per call); they
    must never go stale: set, dense load, NF4 load, meta build then assign-load, dtype casts. Loads of
    other keys do not recompute them, they stay out of the state dict, and turning FP8 off drops them."""
    from tuner.quantization import linear as linear_module
    from tuner.quantization import set_nf4_weight

    torch.manual_seed(0)
    kw = dict(rank=4, alpha=8, quantize_base=True, base_dtype="fp8")
    layer = LoRALinear(64, 32, weight=torch.randn(32, 64), **kw)
    assert torch.equal(_kept_row_scales(layer), _fresh_row_scales(layer))
    assert not any("fp8_row_scales" in k for k in layer.state_dict())
    before = _kept_row_scales(layer).clone()
    layer.to(torch.bfloat16)  # casts floating buffers: the scales are kept as int32 bits
    assert torch.equal(_kept_row_scales(layer), before)
    layer.to(torch.float32)
    set_nf4_weight(layer, torch.randn(32, 64) * 3)
    assert torch.equal(_kept_row_scales(layer), _fresh_row_scales(layer))
    assert not torch.equal(_kept_row_scales(layer), before)
    layer.load_state_dict({"weight": torch.randn(32, 64) * 0.1}, strict=False)  # dense: quantized on load
    assert torch.equal(_kept_row_scales(layer), _fresh_row_scales(layer))
    other = LoRALinear(64, 32, weight=torch.randn(32, 64) * 7, **kw)
    nf4_entries = {k: v for k, v in other.state_dict().items() if k.startswith("weight_")}
    layer.load_state_dict(nf4_entries, strict=False)  # NF4 buffers as saved
    assert torch.equal(_kept_row_scales(layer), _kept_row_scales(other))
    calls = []
    real = linear_module.fp8_row_scales
    monkeypatch.setattr(linear_module, "fp8_row_scales", lambda q: calls.append(1) or real(q))
    layer.load_state_dict({"lora_a.weight": torch.zeros(4, 64)}, strict=False)
    assert calls == []  # an adapter load leaves the base (and its scales) alone
    with torch.device("meta"):
        meta = LoRALinear(64, 32, **kw)
    meta.load_state_dict({"weight": torch.randn(32, 64)}, strict=False, assign=True)
    assert _kept_row_scales(meta).device.type == "cpu" and calls == [1]
    assert torch.equal(_kept_row_scales(meta), _fresh_row_scales(meta))
    compute_nf4_in_fp8(layer, None)
    assert "weight_fp8_row_scales" not in layer._buffers


def test_kept_row_scales_give_the_per_call_numbers_bit_for_bit():
    from tuner.quantization.nf4 import linear_nf4_fp8

    torch.manual_seed(0)
    layer = LoRALinear(64, 32, rank=4, alpha=8, weight=torch.randn(32, 64), quantize_base=True, base_dtype="fp8")
    q = get_nf4_weight(layer)
    for fp8_input_grad in (True, False):
        out = []
        for scales in (_kept_row_scales(layer), None):
            x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
            y = linear_nf4_fp8(x, q, fp8_input_grad=fp8_input_grad, row_scales=scales)
            y.square().sum().backward()
            out.append((y, x.grad))
        assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1]), fp8_input_grad
