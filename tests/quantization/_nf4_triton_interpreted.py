"""Checks of the Triton NF4 kernel on the CPU, run by test_nf4_triton.py in a subprocess with
TRITON_INTERPRET=1 (Triton reads it at import, so it cannot be switched on inside pytest's process)."""

from __future__ import annotations

import os

import torch

from tuner.quantization import nf4 as nf4_module
from tuner.quantization import nf4_triton

SHAPES = [(256, 4096), (37, 129), (33, 100), (1, 1)]
# bitsandbytes' CPU backend (0.50) dequantizes some shapes wrongly, e.g. [64, 96] (mean error 2.5x
# the tensor-op version's); there the kernel is checked against the tensor ops alone.
OPS_ONLY_SHAPES = [(64, 96)]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def kernel_of(q: nf4_module.NF4Weight) -> torch.Tensor:
    return nf4_triton.dequantize_nf4_triton(
        q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *nf4_module.lookup_tables(q.device), q.shape, q.dtype
    )


def check_bit_identical() -> None:
    bnbf = nf4_module.bnb_functional()
    for shape in SHAPES:
        for dtype in DTYPES:
            torch.manual_seed(0)
            q = nf4_module.quantize_nf4(torch.randn(shape) * 0.05, dtype)
            out = kernel_of(q)
            assert out.dtype == dtype and out.shape == q.shape, (shape, dtype)
            assert torch.equal(out, bnbf.dequantize_4bit(q.packed, q.quant_state())), (shape, dtype)
            assert torch.equal(out, nf4_module.dequantize_nf4_ops(q, *nf4_module.lookup_tables(q.device))), (
                shape,
                dtype,
            )
    for shape in OPS_ONLY_SHAPES:
        for dtype in DTYPES:
            q = nf4_module.quantize_nf4(torch.randn(shape) * 0.05, dtype)
            assert torch.equal(kernel_of(q), nf4_module.dequantize_nf4_ops(q, *nf4_module.lookup_tables(q.device))), (
                shape,
                dtype,
            )


def check_the_op_that_compiled_graphs_call() -> None:
    """`torch.ops.tuner.dequantize_nf4` (the triton_op inductor launches directly) gives the same
    weight as the direct call, for the forward's and the backward's variant."""
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        q = nf4_module.quantize_nf4(torch.randn(37, 129) * 0.05, dtype)
        for backward in (False, True):
            out = torch.ops.tuner.dequantize_nf4(
                q.packed,
                q.absmax,
                q.absmax_scale,
                q.absmax_offset,
                *nf4_module.lookup_tables(q.device),
                37,
                129,
                dtype,
                backward,
            )
            assert out.dtype == dtype and torch.equal(out, kernel_of(q)), (dtype, backward)


def check_linear_nf4_uses_the_kernel() -> None:
    torch.manual_seed(0)
    q = nf4_module.quantize_nf4(torch.randn(48, 64) * 0.05, torch.float32)
    calls = []
    real = nf4_triton.dequantize_nf4_triton
    nf4_triton.dequantize_nf4_triton = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        x = torch.randn(5, 64, requires_grad=True)
        y = nf4_module.linear_nf4(x, q)
        y.sum().backward()
    finally:
        nf4_triton.dequantize_nf4_triton = real
    assert len(calls) == 2, calls  # forward, then backward's input gradient
    dense = nf4_module.bnb_functional().dequantize_4bit(q.packed, q.quant_state())
    torch.testing.assert_close(y, x.detach() @ dense.T)
    torch.testing.assert_close(x.grad, dense.sum(0).expand(5, -1))


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1" and nf4_triton.available(torch.device("cpu"))
    check_bit_identical()
    check_the_op_that_compiled_graphs_call()
    check_linear_nf4_uses_the_kernel()
    print("interpreted NF4 kernel checks passed")
