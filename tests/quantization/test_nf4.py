"""NF4 format and linear op against bitsandbytes' own quantize/dequantize (the reference)."""

import sys

import pytest
import torch
import torch.nn.functional as F

from tests.autograd_helpers import saved_tensor_shapes
from tuner.errors import TunerError
from tuner.quantization import NF4Weight, dequantize_nf4, linear_nf4, quantize_nf4
from tuner.quantization import nf4 as nf4_module

bnbf = pytest.importorskip("bitsandbytes.functional")


def _bnb_roundtrip(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    packed, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    return bnbf.dequantize_4bit(packed, state), packed, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 128), (37, 129)])  # the second: blocks straddle rows, odd numel
def test_roundtrip_is_bit_identical_to_bitsandbytes(dtype, shape):
    torch.manual_seed(0)
    w = (torch.randn(shape) * 0.02).to(dtype)
    q = quantize_nf4(w)
    ours = dequantize_nf4(q)
    ref, packed, state = _bnb_roundtrip(w)
    assert ours.dtype == dtype and ours.shape == w.shape
    assert torch.equal(ours, ref)
    # same payload too, so the round-trip error is bitsandbytes' by construction
    assert torch.equal(q.packed, packed.view(-1))
    assert torch.equal(q.absmax, state.absmax)
    assert torch.equal(q.absmax_scale, state.state2.absmax)
    # and it really is a 4-bit quantization: lossy, but close
    err = (ours.float() - w.float()).norm() / w.float().norm()
    assert 0.01 < err < 0.15


def test_dtype_argument_casts_before_quantizing():
    w = torch.randn(32, 64)
    q = quantize_nf4(w, dtype=torch.bfloat16)
    assert q.dtype == torch.bfloat16
    assert torch.equal(dequantize_nf4(q), _bnb_roundtrip(w.to(torch.bfloat16))[0])


def test_payload_is_about_half_a_byte_per_param():
    q = quantize_nf4(torch.randn(256, 512))
    numel = 256 * 512
    blocks = numel // 64
    # packed codes + 8-bit block scales + float32 scales of 256-blocks + float32 offset
    assert q.nbytes == numel // 2 + blocks + 4 * (blocks // 256) + 4
    assert 0.5 < q.nbytes / numel < 0.53


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_linear_nf4_matches_linear_over_dequantized_weight(dtype, tol):
    torch.manual_seed(0)
    q = quantize_nf4(torch.randn(48, 64) * 0.05, dtype=dtype)
    bias = torch.randn(48, dtype=dtype, requires_grad=True)
    x = torch.randn(2, 5, 64, dtype=dtype, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    bias_ref = bias.detach().clone().requires_grad_()
    w_ref = dequantize_nf4(q)

    y = linear_nf4(x, q, bias)
    y_ref = F.linear(x_ref, w_ref, bias_ref)
    assert y.dtype == dtype and y.shape == (2, 5, 48)
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)

    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(bias.grad, bias_ref.grad, atol=tol, rtol=tol)
    assert not any(t.requires_grad for t in (q.packed, q.absmax, q.absmax_scale, q.absmax_offset))


def test_linear_nf4_casts_weight_to_input_dtype():
    # a bf16-stored weight used with a float32 input: as bitsandbytes' matmul_4bit does
    q = quantize_nf4(torch.randn(16, 32), dtype=torch.bfloat16)
    x = torch.randn(3, 32, requires_grad=True)
    y = linear_nf4(x, q)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x @ dequantize_nf4(q).float().T)
    y.sum().backward()
    torch.testing.assert_close(x.grad, dequantize_nf4(q).float().sum(0).expand(3, -1))


def test_linear_nf4_without_input_grad():
    q = quantize_nf4(torch.randn(16, 32))
    with torch.no_grad():
        y = linear_nf4(torch.ones(1, 32), q)
    torch.testing.assert_close(y, dequantize_nf4(q).sum(1)[None])


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.randn(64), "2-D floating-point"),
        (torch.ones(4, 64, dtype=torch.int64), "2-D floating-point"),
        (torch.empty(4, 64, device="meta"), "meta device"),
        ([[1.0]], "2-D floating-point"),
    ],
)
def test_quantize_rejects_bad_input(bad, match):
    with pytest.raises(TunerError, match=match):
        quantize_nf4(bad)


def test_quantize_rejects_unsupported_compute_dtype():
    with pytest.raises(TunerError, match="compute dtype torch.float64"):
        quantize_nf4(torch.randn(4, 64), dtype=torch.float64)


def test_linear_nf4_rejects_feature_mismatch():
    with pytest.raises(TunerError, match="input has 31 features but the NF4 weight expects 32"):
        linear_nf4(torch.randn(2, 31), quantize_nf4(torch.randn(8, 32)))


def test_missing_bitsandbytes_says_how_to_install(monkeypatch):
    nf4_module.bnb_functional.cache_clear()
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    try:
        with pytest.raises(TunerError, match=r"QLoRA needs bitsandbytes: pip install 'tuner\[quantization\]'"):
            quantize_nf4(torch.randn(4, 64))
    finally:
        nf4_module.bnb_functional.cache_clear()


def test_nf4weight_is_a_plain_container():
    q = quantize_nf4(torch.randn(8, 64))
    assert isinstance(q, NF4Weight) and q.shape == (8, 64) and q.device.type == "cpu"
    state = q.quant_state()
    assert state.nested and state.blocksize == 64 and state.quant_type == "nf4" and state.state2.blocksize == 256


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 128), (37, 129), (300, 256)])  # odd numel; >256 blocks (several scale blocks)
def test_tensor_op_dequantization_is_bit_identical_to_bitsandbytes(dtype, shape):
    torch.manual_seed(1)
    q = quantize_nf4((torch.randn(shape) * 0.05).to(dtype))
    ours = nf4_module.dequantize_nf4_ops(q, *nf4_module.lookup_tables(q.device))
    assert ours.dtype == dtype and ours.shape == q.shape
    assert torch.equal(ours, bnbf.dequantize_4bit(q.packed, q.quant_state()))


@pytest.mark.parametrize("save_dense", [False, True])
def test_compiled_lora_over_nf4_is_one_graph_and_equals_eager(save_dense):
    from tuner.peft.lora import LoRALinear
    from tuner.quantization import keep_dense_weights_for_backward

    torch.manual_seed(0)
    layer = LoRALinear(128, 96, rank=4, alpha=8, quantize_base=True, init_lora_weights=False, dtype=torch.float32)
    keep_dense_weights_for_backward(layer, save_dense)
    x = torch.randn(2, 8, 128, requires_grad=True)
    layer(x).square().sum().backward()
    eager = (x.grad.clone(), layer.lora_a.weight.grad.clone(), layer.lora_b.weight.grad.clone())
    x.grad = None
    layer.zero_grad()
    compiled = torch.compile(layer, fullgraph=True)  # fullgraph: a graph break here is an error
    compiled(x).square().sum().backward()
    for got, want in zip((x.grad, layer.lora_a.weight.grad, layer.lora_b.weight.grad), eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class _TwoLayerNF4(torch.nn.Module):
    """A stand-in decoder: `layers` of two NF4 linears each, as apply_activation_checkpointing expects."""

    def __init__(self):
        super().__init__()
        from tuner.peft.lora import LoRALinear

        self.layers = torch.nn.ModuleList(
            torch.nn.Sequential(
                LoRALinear(32, 32, rank=2, alpha=4, quantize_base=True, init_lora_weights=False, dtype=torch.float32),
                torch.nn.GELU(),
                LoRALinear(32, 32, rank=2, alpha=4, quantize_base=True, init_lora_weights=False, dtype=torch.float32),
            )
            for _ in range(2)
        )

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize("checkpointing,dequantizations_per_weight", [(False, 2), (True, 2)])
def test_checkpointed_layers_dequantize_twice_per_step_and_give_the_same_grads(
    monkeypatch, checkpointing, dequantizations_per_weight
):
    """Without checkpointing: forward + backward. With it the recompute's dense weight serves the
    backward too (it used to be forward + recompute + backward = 3)."""
    from tuner.quantization import keep_dense_weights_for_backward
    from tuner.training.memory import apply_activation_checkpointing

    torch.manual_seed(0)
    model = _TwoLayerNF4()
    x = torch.randn(3, 32, requires_grad=True)  # so every layer's backward needs its input gradient
    model(x).square().sum().backward()
    reference = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    if checkpointing:
        apply_activation_checkpointing(model, keep_nf4_dense=True)
    calls = []
    real = nf4_module.bnb_functional()

    class CountingBnb:  # every dequantization, forward or backward, runs bitsandbytes' dequantize_4bit
        def __getattr__(self, name):
            return getattr(real, name)

        def dequantize_4bit(self, *args, **kwargs):
            calls.append(1)
            return real.dequantize_4bit(*args, **kwargs)

    monkeypatch.setattr(nf4_module, "bnb_functional", CountingBnb)
    model(x).square().sum().backward()
    assert len(calls) == 4 * dequantizations_per_weight
    for got, want in zip([p.grad for p in model.parameters() if p.requires_grad], reference):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    if checkpointing:  # checkpointing's default keeps no dense weight: three per weight and step
        plain = _TwoLayerNF4()
        apply_activation_checkpointing(plain)
        calls.clear()
        plain(x).square().sum().backward()
        assert len(calls) == 4 * 3
        keep_dense_weights_for_backward(model, False)
        calls.clear()
        model(x).square().sum().backward()
        assert len(calls) == 4 * 3


def test_compiled_nf4_layers_keep_no_dense_weight_for_backward():
    """Compiled, identical dequantize ops in forward and backward would be merged into one dense
    weight kept from forward to backward: every layer's bf16 weights (8B QLoRA went to 29.9 GiB)."""
    from tuner.peft.lora import LoRALinear

    torch.manual_seed(0)
    layers = torch.nn.Sequential(
        LoRALinear(128, 96, rank=4, alpha=8, quantize_base=True, dtype=torch.float32),
        LoRALinear(96, 128, rank=4, alpha=8, quantize_base=True, dtype=torch.float32),
    )
    compiled = torch.compile(layers, fullgraph=True)
    x = torch.randn(4, 128, requires_grad=True)
    with saved_tensor_shapes() as saved:
        y = compiled(x)
    y.sum().backward()
    assert saved and x.grad is not None
    assert not {(96, 128), (128, 96)} & set(saved), saved
