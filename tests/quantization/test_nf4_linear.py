"""NF4Linear: drop-in frozen linear, its state dict, dtype/device moves; bitsandbytes Linear4bit as reference."""

import copy
import io

import pytest
import torch
from torch import nn

from tuner.errors import TunerError
from tuner.quantization import (
    NF4Linear,
    dequantize_nf4,
    dequantized_state_dict,
    get_nf4_weight,
    linear_nf4,
    nf4_spec,
    quantize_nf4,
    register_nf4_weight,
    set_nf4_weight,
)

bnb = pytest.importorskip("bitsandbytes")


def _linear(i=64, o=48, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(i, o, bias=bias)


def test_from_linear_matches_bitsandbytes_linear4bit():
    lin = _linear()
    ref = bnb.nn.Linear4bit(64, 48, bias=True, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
    ref.load_state_dict(lin.state_dict())
    ref = ref.to("cpu")  # Params4bit quantizes on its first move to a device
    ours = NF4Linear.from_linear(lin, compute_dtype=torch.float32)
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
        torch.testing.assert_close(ours(x), lin(x), atol=0.2, rtol=0)  # lossy, but near the dense layer


def test_forward_backward_trains_nothing_but_gives_input_grad():
    m = NF4Linear.from_linear(_linear(), compute_dtype=torch.float32)
    assert all(not p.requires_grad for p in m.parameters())
    x = torch.randn(2, 3, 64, requires_grad=True)
    m(x).sum().backward()
    torch.testing.assert_close(x.grad, m.dequantize().sum(0).expand(2, 3, -1))


def test_bf16_default_compute_dtype():
    m = NF4Linear.from_linear(_linear(bias=False))
    assert m.compute_dtype == torch.bfloat16 and m.dequantize().dtype == torch.bfloat16
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(m(x), x @ m.dequantize().T)


def test_state_dict_holds_the_payload_and_reloads_bit_exactly():
    m = NF4Linear.from_linear(_linear())
    sd = m.state_dict()
    assert set(sd) == {"weight_nf4", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset", "bias"}
    assert sd["weight_nf4"].dtype == torch.uint8 and sd["weight_absmax_scale"].dtype == torch.int32
    # stored bytes of the weight: ~0.516 bytes per parameter
    nbytes = sum(t.numel() * t.element_size() for k, t in sd.items() if k != "bias")
    assert nbytes == 64 * 48 // 2 + 48 + 4 * 1 + 4
    assert nbytes / (64 * 48) < 0.53

    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = NF4Linear(64, 48, bias=True)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.dequantize(), m.dequantize())
    assert torch.equal(fresh.bias, m.bias)


def test_loading_a_dense_weight_quantizes_it():
    lin = _linear()
    m = NF4Linear(64, 48, bias=True)
    m.load_state_dict({k: v.to(torch.bfloat16) for k, v in lin.state_dict().items()})  # strict
    assert torch.equal(m.dequantize(), dequantize_nf4(quantize_nf4(lin.weight.detach(), dtype=torch.bfloat16)))


def test_loading_a_wrong_shape_names_the_key():
    m = NF4Linear(64, 48)
    with pytest.raises(TunerError, match=r"weight: shape \[48, 32\] does not fit the model's NF4 weight \[48, 64\]"):
        m.load_state_dict({"weight": torch.randn(48, 32)})


def test_dtype_cast_of_the_model_leaves_the_payload_alone():
    m = NF4Linear.from_linear(_linear(), compute_dtype=torch.float32)
    before = m.dequantize()
    m.to(torch.bfloat16)
    assert m.weight_absmax_scale.dtype == torch.int32
    assert torch.equal(m.dequantize(), before)
    assert m.bias.dtype == torch.bfloat16  # the dense bias follows the cast as in nn.Linear


def test_deepcopy_keeps_load_hook_bound_to_the_copy():
    m = NF4Linear(64, 48)
    c = copy.deepcopy(m)
    w = torch.randn(48, 64)
    c.load_state_dict({"weight": w})
    assert torch.equal(c.dequantize(), dequantize_nf4(quantize_nf4(w, dtype=torch.bfloat16)))
    assert not m.weight_absmax.any()  # the original untouched


def test_unloaded_meta_module_says_what_to_do():
    with torch.device("meta"):
        m = NF4Linear(64, 48)
    with pytest.raises(TunerError, match="still on the meta device"):
        m(torch.randn(2, 64))


def test_from_linear_on_meta_gives_an_empty_module_to_load_into():
    with torch.device("meta"):
        lin = nn.Linear(64, 48)
    m = NF4Linear.from_linear(lin)
    assert m.weight_nf4.is_meta
    w = torch.randn(48, 64)
    m.load_state_dict({"weight": w, "bias": torch.zeros(48)}, assign=True)
    assert not m.weight_nf4.is_meta and m.weight_nf4.device.type == "cpu"
    assert torch.equal(m.dequantize(), dequantize_nf4(quantize_nf4(w, dtype=torch.bfloat16)))


def test_register_on_another_module_and_export_dequantized():
    class Frozen(nn.Module):  # how a LoRA layer with quantize_base=True keeps its base
        def __init__(self):
            super().__init__()
            register_nf4_weight(self, 48, 64, compute_dtype=torch.float32)
            self.lora_a = nn.Linear(64, 2, bias=False)

        def forward(self, x):
            return linear_nf4(x, get_nf4_weight(self)) + self.lora_a(x).sum(-1, keepdim=True)

    model = nn.Sequential(Frozen(), nn.ReLU(), NF4Linear(48, 8, bias=True, compute_dtype=torch.float32))
    w0, w2 = torch.randn(48, 64), torch.randn(8, 48)
    set_nf4_weight(model[0], w0)
    set_nf4_weight(model[2], w2)
    out = dequantized_state_dict(model)
    assert list(out) == ["0.weight", "0.lora_a.weight", "2.bias", "2.weight"]  # state_dict order
    assert torch.equal(out["0.weight"], dequantize_nf4(quantize_nf4(w0)))
    assert torch.equal(out["2.weight"], dequantize_nf4(quantize_nf4(w2)))
    assert dequantized_state_dict(model, dtype=torch.bfloat16)["2.weight"].dtype == torch.bfloat16
    # the export loads into the dense twin of the model, which then computes the same function
    dense = nn.Sequential(nn.Linear(64, 48, bias=False), nn.ReLU(), nn.Linear(48, 8))
    dense.load_state_dict({k: v for k, v in out.items() if "lora" not in k})
    x = torch.randn(3, 64)
    torch.testing.assert_close(
        dense[2](dense[1](dense[0](x))), model[2](model[1](linear_nf4(x, get_nf4_weight(model[0]))))
    )


def test_register_errors():
    with pytest.raises(TunerError, match="already has a dense `weight`"):
        register_nf4_weight(nn.Linear(4, 4), 4, 4)
    with pytest.raises(TunerError, match="already has an NF4 weight"):
        register_nf4_weight(NF4Linear(64, 4), 4, 64)
    with pytest.raises(TunerError, match="compute dtype"):
        NF4Linear(64, 4, compute_dtype=torch.int8)
    with pytest.raises(TunerError, match="no NF4 weight"):
        set_nf4_weight(nn.Identity(), torch.randn(4, 4))
    with pytest.raises(TunerError, match="has no NF4 weight"):
        nf4_spec(nn.Linear(4, 4))
    assert nf4_spec(NF4Linear(64, 4, compute_dtype=torch.float16)) == (torch.Size([4, 64]), torch.float16)
    with pytest.raises(TunerError, match="needs an nn.Linear"):
        NF4Linear.from_linear(nn.Identity())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_move_and_kernels_match_cpu():
    lin = _linear(256, 128)
    cpu = NF4Linear.from_linear(lin)
    gpu = copy.deepcopy(cpu).cuda()
    assert gpu.weight_nf4.is_cuda
    assert torch.equal(gpu.dequantize().cpu(), cpu.dequantize())  # the CUDA dequantize kernel agrees
    quantized_on_gpu = NF4Linear.from_linear(lin.cuda())
    assert torch.equal(quantized_on_gpu.dequantize().cpu(), cpu.dequantize())
    x = torch.randn(4, 256, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    gpu(x).sum().backward()  # warm-up: cuBLAS workspaces are allocated on first use
    x.grad = None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    y = gpu(x)
    # nothing but the output outlives the forward: no dense copy of the weight is kept for backward
    assert torch.cuda.memory_allocated() - before <= 512 * ((y.numel() * 2 + 511) // 512)
    y.sum().backward()
    bf16 = dict(atol=1e-2, rtol=1.6e-2)  # fused addmm vs. matmul-then-add round differently
    torch.testing.assert_close(y, x.detach() @ gpu.dequantize().T + gpu.bias, **bf16)
    torch.testing.assert_close(x.grad, gpu.dequantize().sum(0).expand(4, -1), **bf16)
    back = gpu.to("cpu")
    assert torch.equal(back.dequantize(), cpu.dequantize())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_op_dequantization_eager_and_compiled_match_the_kernel():
    from tuner.quantization import nf4 as nf4_module

    torch.manual_seed(0)
    q = nf4_module.quantize_nf4(torch.randn(1024, 768, device="cuda", dtype=torch.bfloat16) * 0.02)
    kernel = nf4_module.dequantize_nf4(q)
    ops = nf4_module.dequantize_nf4_ops(q, *nf4_module.lookup_tables(q.device))
    compiled = torch.compile(nf4_module.dequantize_nf4_ops, fullgraph=True)(q, *nf4_module.lookup_tables(q.device))
    assert torch.equal(ops, kernel)
    # the compiled kernel may fuse scale * code + offset into one FMA: at most one bf16 step apart
    torch.testing.assert_close(compiled, kernel, atol=0, rtol=2**-7)
