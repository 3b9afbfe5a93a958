"""The Triton NF4 dequantization kernel (`tuner.quantization.nf4_triton`): bit-identical to
bitsandbytes, used by eager and compiled NF4 layers on CUDA. On the CPU it runs under Triton's
interpreter (the dev extra installs Triton); on the GPU machine the `gpu` tests run it for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.autograd_helpers import saved_tensor_shapes
from tuner.quantization import nf4 as nf4_module
from tuner.quantization import nf4_triton

pytest.importorskip("triton", reason="the dev extra installs triton (Linux x86_64)")
bnbf = nf4_module.bnb_functional()
SHAPES = [(256, 4096), (33, 100), (1, 1), (64, 96)]


def _kernel_of(q):
    return nf4_triton.dequantize_nf4_triton(
        q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *nf4_module.lookup_tables(q.device), q.shape, q.dtype
    )


@pytest.mark.slow
def test_kernel_under_the_interpreter_is_bit_identical_to_bitsandbytes_and_serves_linear_nf4():
    """Every dtype and odd shapes, and `linear_nf4` forward + backward dequantize through it
    (`_nf4_triton_interpreted.py`, in a subprocess: Triton's interpreter is chosen at import)."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_nf4_triton_interpreted.py"))],
        env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "interpreted NF4 kernel checks passed" in proc.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(14336, 4096), (1024, 4096), (4096, 14336), (64, 96), (33, 100), (1, 1)])
def test_cuda_kernel_is_bit_identical_to_bitsandbytes(dtype, shape):
    torch.manual_seed(0)
    q = nf4_module.quantize_nf4(torch.randn(shape, device="cuda") * 0.05, dtype)
    assert torch.equal(_kernel_of(q), bnbf.dequantize_4bit(q.packed, q.quant_state()))


@pytest.mark.gpu
def test_cuda_compiled_lora_over_nf4_launches_the_kernel_directly_keeps_no_dense_weight_and_equals_eager(monkeypatch):
    """Compiled layers launch the kernel from inductor's code (no Python launcher call once compiled),
    once per weight in forward and once in backward, keep no dense weight and match eager."""
    from torch.profiler import ProfilerActivity, profile

    from tuner.peft.lora import LoRALinear

    torch.manual_seed(0)
    layers = torch.nn.Sequential(
        LoRALinear(256, 192, rank=4, alpha=8, quantize_base=True, init_lora_weights=False, dtype=torch.bfloat16),
        LoRALinear(192, 256, rank=4, alpha=8, quantize_base=True, init_lora_weights=False, dtype=torch.bfloat16),
    ).cuda()
    x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    layers(x).float().square().sum().backward()
    eager = [t.clone() for t in (x.grad, *(p.grad for p in layers.parameters() if p.requires_grad))]
    compiled = torch.compile(layers, fullgraph=True)
    compiled(x).float().square().sum().backward()  # compiles
    x.grad = None
    layers.zero_grad()
    calls = []
    real = nf4_triton.dequantize_nf4_triton
    monkeypatch.setattr(nf4_triton, "dequantize_nf4_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with saved_tensor_shapes() as saved:
            y = compiled(x)
        y.float().square().sum().backward()
        torch.cuda.synchronize()
    launches = [e for e in prof.events() if "dequantize_nf4" in e.name and e.device_type.name == "CUDA"]
    assert calls == []
    assert len(launches) == 4, [e.name for e in launches]  # two weights, forward and backward
    assert not {(192, 256), (256, 192)} & set(saved), saved
    got = [x.grad, *(p.grad for p in layers.parameters() if p.requires_grad)]
    for g, want in zip(got, eager):  # bf16, fused differently: a few elements round differently
        assert (g.float() - want.float()).norm() <= 1e-2 * want.float().norm()


def _fp8_rows_of(q, backward=False, transposed=False):
    payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *nf4_module.lookup_tables(q.device))
    to_fp8, scale = nf4_triton.nf4_row_scales(*payload, q.shape, q.dtype)
    data = nf4_triton.nf4_to_fp8(*payload, to_fp8, q.shape, q.dtype, backward=backward, transposed=transposed)
    return data, scale


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(14336, 4096), (1024, 4096), (4096, 14336), (64, 96), (33, 100)])
def test_cuda_fp8_rows_kernel_is_bit_identical_to_dequantize_then_quantize_rows(dtype, shape):
    from tuner.quantization.fp8 import quantize_rows

    torch.manual_seed(0)
    w = torch.randn(shape, device="cuda") * 0.05
    w[0] = 0.0
    w[1, 64:] *= 1e-5  # e4m3 subnormals
    q = nf4_module.quantize_nf4(w, dtype)
    data, scale = _fp8_rows_of(q)
    want_data, want_scale = quantize_rows(bnbf.dequantize_4bit(q.packed, q.quant_state()))
    assert torch.equal(data.view(torch.uint8), want_data.view(torch.uint8))
    assert torch.equal(scale, want_scale.view(-1))
    data_t, scale_t = _fp8_rows_of(q, transposed=True)
    assert data_t.is_contiguous() and torch.equal(data_t.t().view(torch.uint8), data.view(torch.uint8))
    assert torch.equal(scale_t, scale)
    payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *nf4_module.lookup_tables(q.device))

    def both_ops():
        to_fp8, scale = torch.ops.tuner.nf4_row_scales(*payload, *shape, dtype)
        return torch.ops.tuner.nf4_to_fp8(*payload, to_fp8, *shape, dtype, True, True), scale

    got = torch.compile(both_ops)()
    assert torch.equal(got[0].view(torch.uint8), data_t.view(torch.uint8)) and torch.equal(got[1], scale)
    assert torch.equal(nf4_module.fp8_row_scales(q)[1], scale)


@pytest.mark.gpu
def test_cuda_compiled_qlora_layer_in_fp8_launches_the_fused_kernel_from_inductor(monkeypatch):
    """A compiled LoRA layer over NF4 computing in FP8 makes its FP8 weight with the fused kernel,
    launched from inductor's code (no Python call), in forward and backward, from its kept row scales,
    with eager's numbers."""
    from torch.profiler import ProfilerActivity, profile

    from tuner.peft.lora import LoRALinear
    from tuner.quantization.fp8 import scaled_mm_available

    if not scaled_mm_available(torch.device("cuda")):
        pytest.skip("needs FP8 tensor cores (compute capability 8.9+)")
    torch.manual_seed(0)
    kw = dict(rank=4, alpha=8, quantize_base=True, base_dtype="fp8_all", init_lora_weights=False, dtype=torch.bfloat16)
    layers = torch.nn.Sequential(LoRALinear(256, 192, **kw), LoRALinear(192, 256, **kw)).cuda()
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    layers(x).float().square().sum().backward()
    eager = [t.clone() for t in (x.grad, *(p.grad for p in layers.parameters() if p.requires_grad))]
    compiled = torch.compile(layers, fullgraph=True)
    compiled(x).float().square().sum().backward()  # compiles
    x.grad = None
    layers.zero_grad()
    calls = []
    real = nf4_triton.nf4_to_fp8
    monkeypatch.setattr(nf4_triton, "nf4_to_fp8", lambda *a, **k: calls.append(1) or real(*a, **k))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        compiled(x).float().square().sum().backward()
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    assert calls == []
    # two weights, forward and backward (W^T): the e4m3 writer alone (the row scales are kept), no
    # dequantization, no transposing copy
    assert sum("_fp8_rows_write_kernel" in k for k in kernels) == 4, kernels
    assert not any("_fp8_row_scales_kernel" in k or "dequantize_nf4" in k for k in kernels), kernels
    got = [x.grad, *(p.grad for p in layers.parameters() if p.requires_grad)]
    # the gradient crosses two FP8 input-gradient GEMMs; compiled activation and gradient scales may
    # differ from eager's by an ulp (inductor's reciprocal), which moves some e4m3 roundings (1.1% seen)
    for g, want in zip(got, eager):
        assert (g.float() - want.float()).norm() <= 2e-2 * want.float().norm()
