"""Checks of the Triton kernels (NF4 dequantization; NF4 -> rowwise e4m3; the FP8 weight's transposed
copy; the FP8 output loss's chunk) on the CPU, run by
test_nf4_triton.py in a subprocess with TRITON_INTERPRET=1 (Triton reads it at import, so it cannot
be switched on inside pytest's process)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from tuner.quantization import fp8_triton, nf4_triton
from tuner.quantization import nf4 as nf4_module
from tuner.quantization.fp8 import FP8Weight, input_grad_operand, linear_fp8, quantize_fp8, quantize_rows, row_scales
from tuner.training import loss as loss_module
from tuner.training import loss_triton

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


def fp8_rows_of(
    q: nf4_module.NF4Weight, backward: bool = False, transposed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused path: the row scales kernel, then the e4m3 writer."""
    payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *nf4_module.lookup_tables(q.device))
    to_fp8, scale = nf4_triton.nf4_row_scales(*payload, q.shape, q.dtype)
    data = nf4_triton.nf4_to_fp8(*payload, to_fp8, q.shape, q.dtype, backward=backward, transposed=transposed)
    return data, scale


def two_step_fp8_rows(q: nf4_module.NF4Weight) -> tuple[torch.Tensor, torch.Tensor]:
    """What the fused kernel replaces: dequantize (tensor ops, = bitsandbytes), then `quantize_rows`."""
    data, scale = quantize_rows(nf4_module.dequantize_nf4_ops(q, *nf4_module.lookup_tables(q.device)))
    return data, scale.view(-1)


def assert_same_fp8(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor], what) -> None:
    assert got[0].dtype == torch.float8_e4m3fn and got[0].shape == want[0].shape, what
    assert torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8)), what  # bits: -0 is not +0
    assert got[1].dtype == torch.float32 and torch.equal(got[1], want[1]), what


def check_fp8_rows_bit_identical() -> None:
    """`nf4_row_scales` + `nf4_to_fp8` = dequantize then `quantize_rows`, bit for bit, in both layouts: rows of many
    chunks, rows that share 64-value blocks, a single value pair, an all-zero row, and blocks ~1e-4 /
    3e-6 of their row's largest value (e4m3's subnormals)."""
    shapes = [(16, 4096), (3, 14336), (37, 130), (33, 100), (64, 96), (1, 2)]
    for shape in shapes:
        for dtype in DTYPES:
            torch.manual_seed(0)
            w = torch.randn(shape) * 0.05
            w[0] = 0.0
            q = nf4_module.quantize_nf4(w, dtype)
            want = two_step_fp8_rows(q)
            assert_same_fp8(fp8_rows_of(q), want, (shape, dtype))
            data_t, scale = fp8_rows_of(q, transposed=True)  # W^T [in, out], row-major
            assert data_t.is_contiguous() and data_t.shape == (shape[1], shape[0])
            assert_same_fp8((data_t.t(), scale), want, (shape, dtype, "transposed"))
    w = torch.randn(16, 1024) * 0.02
    w[:, 64:512] *= 1e-4
    w[:, 512:] *= 3e-6
    for dtype in DTYPES:
        q = nf4_module.quantize_nf4(w, dtype)
        want = two_step_fp8_rows(q)
        assert ((want[0].view(torch.uint8) & 0x78) == 0).sum() > 1000  # subnormal codes were exercised
        assert_same_fp8(fp8_rows_of(q), want, ("subnormals", dtype))


def _e4m3_bits_of(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + i, nf4_triton._e4m3_bits(tl.load(x_ptr + i, mask=i < n)).to(tl.uint8), mask=i < n)


def check_e4m3_rounding_matches_torchs_cast() -> None:
    """The kernel's hand-made e4m3 rounding against torch's cast: every finite e4m3 value, every
    midpoint between neighbours (ties to even) and one float32 step either side of it, random values."""
    kernel = triton.jit(_e4m3_bits_of)
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    every = every[torch.isfinite(every)].unique()
    mid = (every[1:] + every[:-1]) / 2
    up, down = torch.full_like(mid, 1e9), torch.full_like(mid, -1e9)
    x = torch.cat(
        [
            every,
            mid,
            torch.nextafter(mid, up),
            torch.nextafter(mid, down),
            (torch.rand(20000) * 2 - 1) * 448,
            torch.randn(20000) * 0.01,
            torch.tensor([0.0, -0.0, 1e-30, -1e-30]),
        ]
    ).contiguous()
    out = torch.empty(x.numel(), dtype=torch.uint8)
    kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
    assert torch.equal(out, x.to(torch.float8_e4m3fn).view(torch.uint8))


def check_the_fp8_ops_that_compiled_graphs_call() -> None:
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        q = nf4_module.quantize_nf4(torch.randn(37, 130) * 0.05, dtype)
        payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *nf4_module.lookup_tables(q.device))
        to_fp8, scale = torch.ops.tuner.nf4_row_scales(*payload, 37, 130, dtype)
        for backward in (False, True):
            for transposed in (False, True):
                got = torch.ops.tuner.nf4_to_fp8(*payload, to_fp8, 37, 130, dtype, transposed, backward)
                want = fp8_rows_of(q, backward, transposed)
                assert_same_fp8((got, scale), want, (dtype, backward, transposed))


def _counting_kernels(calls: list[str]):
    """Make `nf4_triton`'s row scales and e4m3 writer record their calls in ``calls``; returns the undo."""
    real_scales, real_write = nf4_triton.nf4_row_scales, nf4_triton.nf4_to_fp8
    nf4_triton.nf4_row_scales = lambda *a, **k: calls.append("scales") or real_scales(*a, **k)
    nf4_triton.nf4_to_fp8 = lambda *a, **k: calls.append("write") or real_write(*a, **k)

    def undo() -> None:
        nf4_triton.nf4_row_scales, nf4_triton.nf4_to_fp8 = real_scales, real_write

    return undo


def check_linear_nf4_fp8_makes_its_weight_with_the_fused_kernels() -> None:
    """`linear_nf4_fp8` makes the FP8 weight with the fused kernels (the row scales once, in forward;
    the e4m3 weight in forward and backward) with the two-step weight's numbers, and in two steps
    where rows are not whole bytes. Kept for backward (``save_dense``), the FP8 input gradient's
    ``W^T`` is still made from NF4 (no transposing copy); the bf16 input gradient (``fp8_fwd``) uses
    the kept copy."""
    cases = [  # in_features, fp8_input_grad, save_dense, kernel calls
        (64, True, False, ["scales", "write", "write"]),
        (64, True, True, ["scales", "write", "write"]),
        (64, False, False, ["scales", "write", "write"]),
        (64, False, True, ["scales", "write"]),
        (63, True, False, []),
    ]
    for in_features, fp8_input_grad, save_dense, expected_calls in cases:
        torch.manual_seed(0)
        q = nf4_module.quantize_nf4(torch.randn(48, in_features) * 0.05, torch.float32)
        calls: list[str] = []
        undo = _counting_kernels(calls)
        try:
            x = torch.randn(5, in_features, requires_grad=True)
            y = nf4_module.linear_nf4_fp8(x, q, fp8_input_grad=fp8_input_grad, save_dense=save_dense)
            y.square().sum().backward()
        finally:
            undo()
        case = (in_features, fp8_input_grad, save_dense)
        assert calls == expected_calls, (case, calls)
        x_ref = x.detach().clone().requires_grad_()
        y_ref = linear_fp8(x_ref, FP8Weight(*two_step_fp8_rows(q), torch.float32, fp8_input_grad))
        y_ref.square().sum().backward()
        assert torch.equal(y, y_ref) and torch.equal(x.grad, x_ref.grad), case


def check_kept_row_scales_leave_one_kernel_per_call() -> None:
    """With the row scales kept (`nf4.fp8_row_scales`: the scales kernel, the two-step path's to_fp8 and
    scale bit for bit), each forward and backward launches the e4m3 writer alone, with the same numbers."""
    torch.manual_seed(0)
    q = nf4_module.quantize_nf4(torch.randn(48, 128) * 0.05, torch.bfloat16)
    kept = nf4_module.fp8_row_scales(q)
    to_fp8, scale = row_scales(nf4_module.dequantize_nf4_ops(q, *nf4_module.lookup_tables(q.device)))
    assert torch.equal(kept, torch.stack((to_fp8.view(-1), scale.view(-1))))
    calls: list[str] = []
    undo = _counting_kernels(calls)
    try:
        results = []
        for scales in (kept, None):
            x = torch.randn(5, 128, generator=torch.Generator().manual_seed(1)).bfloat16().requires_grad_()
            y = nf4_module.linear_nf4_fp8(x, q, row_scales=scales)
            y.float().square().sum().backward()
            results.append((y, x.grad))
    finally:
        undo()
    assert calls == ["write", "write", "scales", "write", "write"], calls
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def check_fp8_transpose_equals_torchs_and_serves_the_input_gradient() -> None:
    """`fp8_triton.transpose_bytes` equals ``t.t().contiguous()`` byte for byte on shapes that fill
    tiles, leave ragged edges and are thinner than a tile, and is what eager FP8 backward multiplies by."""
    g = torch.Generator().manual_seed(0)
    for shape in [(256, 384), (130, 257), (1, 300), (300, 1), (5, 3)]:
        t = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        assert torch.equal(fp8_triton.transpose_bytes(t), t.t().contiguous()), shape
        e4m3 = t.view(torch.float8_e4m3fn)
        out = fp8_triton.transpose_bytes(e4m3)
        assert out.dtype == torch.float8_e4m3fn and torch.equal(out.view(torch.uint8), t.t().contiguous()), shape
    assert fp8_triton.transpose_bytes(torch.empty(0, 7, dtype=torch.uint8)).shape == (7, 0)
    q = quantize_fp8(torch.randn(200, 136, generator=g), torch.bfloat16)
    calls = []
    real = fp8_triton.transpose_bytes
    fp8_triton.transpose_bytes = lambda t: calls.append(t.shape) or real(t)
    try:
        operand = input_grad_operand(q, torch.bfloat16)
    finally:
        fp8_triton.transpose_bytes = real
    assert calls == [(200, 136)] and torch.equal(operand.view(torch.uint8), q.data.t().contiguous().view(torch.uint8))


def check_fp8_loss_kernel_matches_the_tensor_ops_and_serves_the_loss() -> None:
    """`loss_triton.ce_grad_fp8` gives the tensor ops' row losses, row scales within the bf16 rounding
    they apply first, and a gradient as near the exact one as theirs (each row's largest value on
    e4m3's 448, ignored rows zero); `fp8_output`'s loss runs through it and equals the tensor-op path."""
    g = torch.Generator().manual_seed(0)
    cases = [
        (dtype, shape) for dtype in (torch.bfloat16, torch.float16, torch.float32) for shape in [(9, 5000), (4, 37)]
    ]
    shipped = loss_triton.ROWS
    for rows_per_program in (shipped, 4):  # a program of several rows, and rows that leave one part-filled
        loss_triton.ROWS = rows_per_program
        for dtype, (rows, vocab) in cases + [(torch.bfloat16, (1, 4096))]:
            logits = (torch.randn(rows, vocab, generator=g) * 3).to(dtype)
            targets = torch.randint(0, vocab, (rows,), generator=g)
            targets[rows // 2] = -100
            scale = torch.rand(vocab, generator=g) * 1e-2 + 1e-4
            losses, grad = loss_triton.ce_grad_fp8(logits, targets, -100, scale, scale.log())
            valid = targets != -100
            safe = targets.masked_fill(~valid, 0)
            ref_losses, ref_grad = loss_module._ce_forward_backward_fp8(logits, safe, valid, scale)
            assert torch.allclose(losses, ref_losses, rtol=1e-6, atol=1e-5), (dtype, rows, vocab)
            assert torch.allclose(grad.scale, ref_grad.scale, rtol=2**-7), (dtype, rows, vocab)
            exact = torch.softmax(logits.double(), -1) - torch.nn.functional.one_hot(safe, vocab).double()
            exact = exact * scale.double() * valid[:, None]
            largest = exact.abs().amax(1).clamp(min=1e-30)
            error = (grad.data.double() * grad.scale - exact).abs().amax(1) / largest
            ref_error = (ref_grad.data.double() * ref_grad.scale - exact).abs().amax(1) / largest
            assert (error <= ref_error + 2**-9).all() and (error <= 2**-4).all(), (dtype, rows, vocab, error)
            codes = grad.data.float().abs().amax(1)
            assert torch.equal(codes, torch.where(valid, 448.0, 0.0)), (dtype, rows, vocab, codes)
    loss_triton.ROWS = shipped
    torch.manual_seed(0)
    weight = quantize_fp8(torch.randn(300, 64) * 0.05, torch.float32)
    hidden = torch.randn(2 * 24, 64, requires_grad=True)
    targets = torch.randint(0, 300, (48,))
    targets[:5] = -100
    calls = []
    real = loss_triton.ce_grad_fp8
    results = []
    for use_kernel in (True, False):
        loss_triton.ce_grad_fp8 = lambda *a: calls.append(a[0].shape) or real(*a)
        available = fp8_triton.available
        if not use_kernel:
            fp8_triton.available = lambda device: False
        try:
            hidden.grad = None
            total = loss_module._FrozenLinearCrossEntropySum.apply(hidden, weight, targets, -100, 16)
            total.backward()
            results.append((total.detach(), hidden.grad.clone()))
        finally:
            loss_triton.ce_grad_fp8, fp8_triton.available = real, available
    assert len(calls) == 3, calls  # three chunks of 16 rows through the kernel, none without it
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-6)
    assert (results[0][1] - results[1][1]).abs().max() <= 0.07 * results[1][1].abs().max()


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1" and nf4_triton.available(torch.device("cpu"))
    check_bit_identical()
    check_the_op_that_compiled_graphs_call()
    check_linear_nf4_uses_the_kernel()
    check_fp8_rows_bit_identical()
    check_e4m3_rounding_matches_torchs_cast()
    check_the_fp8_ops_that_compiled_graphs_call()
    check_linear_nf4_fp8_makes_its_weight_with_the_fused_kernels()
    check_kept_row_scales_leave_one_kernel_per_call()
    check_fp8_transpose_equals_torchs_and_serves_the_input_gradient()
    check_fp8_loss_kernel_matches_the_tensor_ops_and_serves_the_loss()
    print("interpreted NF4 kernel checks passed")
