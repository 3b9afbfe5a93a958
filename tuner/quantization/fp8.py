"""FP8 (e4m3) storage of frozen base weights and the linear op that computes with it.

LoRA never updates its base, so the base can be quantized once, at load, instead of every step as
FP8 training of whole models does. The format is rowwise: each output row of ``W [out, in]`` gets
one float32 scale, ``W ~= data.float() * scale[:, None]`` with ``data`` in ``float8_e4m3fn`` and
the row's largest magnitude mapped to e4m3's largest finite value (448). Activations and output
gradients are quantized the same way, per row, on every call (dynamic scaling). The arithmetic is
torchao's (``torchao.float8``: scale = 448 / amax computed in float64, saturating cast), which the
tests check bit for bit.

`linear_fp8(x, q, bias)` is ``x @ W^T + bias`` with both GEMMs of its forward and backward in FP8:

- forward: ``y = _scaled_mm(xq, Wq^T, scale_a=sx [M, 1], scale_b=sw [1, N])``;
- input gradient: ``dX = dY @ W``. Rowwise scaling needs the scales of the second operand along
  its output dimension, but ``W``'s are along the contraction: they are folded into the gradient
  (``dY * sw`` per column, then quantized per row) and the FP8 weight is transposed (a transient
  1-byte copy, so the model holds one FP8 copy: 1 byte per base parameter, half of bf16).
- no weight gradient: the base is frozen; nothing per call is saved for backward but the
  (already stored) FP8 weight.

Two recipes, one per `FP8Weight.fp8_input_grad` (chosen by ``model.base_dtype``, fp8_storage.py):
both GEMMs in FP8 as above (``fp8_all``), or the forward alone (``fp8_fwd``): the input gradient is
then ``dY @ dequantize(W)`` in the compute dtype (bf16), so the output gradient is never rounded to
e4m3 (3 mantissa bits per value, one scale per row); it costs a bf16 GEMM and a dequantized copy
of one weight at a time. docs/benchmarks.md gives each recipe's speed and loss curve.

On a GPU with FP8 tensor cores (compute capability 8.9+: Ada, Hopper) the GEMMs run through
``torch._scaled_mm`` (cuBLAS, bf16 output). Elsewhere (CPU, older GPUs) they are emulated:
the same quantized operands dequantized to float32 and multiplied, so the CPU tests exercise the
exact numerics of the quantization and differ from the GPU only in accumulation order. Why not
torchao's ``Float8Linear``: it quantizes the weight on every call (it trains it) and needs the
weight in high precision; here the weight is stored in FP8 and only activations are scaled per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from tuner.errors import ConfigError, TunerError
from tuner.quantization import fp8_triton
from tuner.quantization._checks import check_weight_to_quantize

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448.0
_EPS = 1e-12  # smallest amax a scale is computed from (torchao's): an all-zero row stays zero
GEMM_MULTIPLE = 16  # cuBLAS's FP8 GEMM needs the input and output features to be multiples of 16


@dataclass(frozen=True)
class FP8Weight:
    """A 2-D weight in FP8 with one scale per output row.

    data: float8_e4m3fn [out, in]; scale: float32 [out], what a row multiplies by to dequantize;
    dtype: the dtype `dequantize_fp8` returns (the model's compute dtype); fp8_input_grad: whether
    `linear_fp8`'s input-gradient GEMM runs in FP8 too (else in ``dtype`` on the dequantized weight).
    """

    data: torch.Tensor
    scale: torch.Tensor
    dtype: torch.dtype
    fp8_input_grad: bool = True

    shape = property(lambda self: self.data.shape, doc="[out, in]")
    device = property(lambda self: self.data.device, doc="where the weight lives")


def row_scales(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to_fp8, scale)`` of a 2-D tensor's rows, float32 [rows, 1] each: what each row is multiplied
    by to reach e4m3 (torchao's rowwise arithmetic: 448 / amax in float64) and its reciprocal."""
    amax = t.abs().amax(dim=-1, keepdim=True).to(torch.float64)
    to_fp8 = (FP8_MAX / torch.clamp(amax, min=_EPS)).to(torch.float32)
    return to_fp8, to_fp8.reciprocal()


def quantize_rows_with(t: torch.Tensor, to_fp8: torch.Tensor) -> torch.Tensor:
    """``t`` [rows, n] in e4m3, each row multiplied by its ``to_fp8`` [rows, 1] (saturating cast)."""
    return (t.to(torch.float32) * to_fp8).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 2-D tensor to e4m3 per row: ``(q, scale)`` with ``t ~= q.float() * scale``, scale
    float32 [rows, 1] (`row_scales`, then `quantize_rows_with`)."""
    to_fp8, scale = row_scales(t)
    return quantize_rows_with(t, to_fp8), scale


def quantize_fp8(weight: torch.Tensor, dtype: torch.dtype | None = None, fp8_input_grad: bool = True) -> FP8Weight:
    """Quantize a 2-D floating weight to FP8 with per-output-row scales, on its device."""
    check_weight_to_quantize(weight, "quantize_fp8")
    data, scale = quantize_rows(weight.detach())
    return FP8Weight(data, scale.view(-1), dtype or weight.dtype, fp8_input_grad)


def _dequantize(data: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (data.to(torch.float32) * scale[:, None]).to(dtype)


def dequantize_fp8(q: FP8Weight) -> torch.Tensor:
    """The dense weight that `q` stands for, in `q.dtype`."""
    return _dequantize(q.data, q.scale, q.dtype)


_SCALED_MM: dict[torch.device, bool] = {}  # a plain dict, which torch.compile reads as constants


def scaled_mm_available(device: torch.device) -> bool:
    """Whether `device` runs FP8 GEMMs (`torch._scaled_mm`): CUDA with compute capability >= 8.9."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    known = _SCALED_MM.get(device)
    if known is None:
        known = _SCALED_MM[device] = hasattr(torch, "_scaled_mm") and torch.cuda.get_device_capability(device) >= (8, 9)
    return known


def check_fp8_device(device: torch.device, shape: tuple[int, int]) -> None:
    """Raise a ConfigError where FP8 GEMMs cannot run a weight of `shape` on `device` (a CUDA GPU
    without FP8 tensor cores, or features that are not multiples of 16); CPU emulates and passes."""
    device = torch.device(device)
    if device.type == "cpu" or device.type == "meta":
        return
    if not scaled_mm_available(device):
        raise ConfigError(
            f"base_dtype: fp8 needs FP8 tensor cores (compute capability 8.9+: Ada, Hopper); {device} has none",
            fix="drop model.base_dtype (a bf16 base; with a qlora_* builder an NF4 base computing in bf16)",
        )
    if any(n % GEMM_MULTIPLE for n in shape):
        raise ConfigError(
            f"base_dtype: fp8 needs layer sizes that are multiples of {GEMM_MULTIPLE}, got a weight of {list(shape)}",
            fix="drop model.base_dtype for this model",
        )


def _gemm(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype,
    fast_accum: bool = False,
) -> torch.Tensor:
    """``(a * a_scale) @ (b * b_scale[:, None])^T`` for e4m3 ``a [M, K]``, ``b [N, K]`` (both row-major),
    ``a_scale [M, 1]``, ``b_scale [N]``: the rowwise-scaled FP8 GEMM, or its float32 emulation.
    ``fast_accum``: Hopper's faster, less often rounded-up FP8 accumulation (torchao uses it for the
    forward's output and not for gradients; so does `linear_fp8`)."""
    if scaled_mm_available(a.device):
        out = torch._scaled_mm(
            a,
            b.t(),
            scale_a=a_scale,
            scale_b=b_scale.view(1, -1),
            out_dtype=torch.bfloat16,
            use_fast_accum=fast_accum,
        )
        return out.to(out_dtype)
    return ((a.to(torch.float32) * a_scale) @ (b.to(torch.float32) * b_scale[:, None]).t()).to(out_dtype)


class FP8Input(NamedTuple):
    """An activation quantized once for every FP8 projection that reads it (q/k/v read the same
    normed x, and so do the MLP's gate and up): ``data`` e4m3 ``[rows, in]`` (the input's leading
    dimensions flattened), ``scale`` float32 ``[rows, 1]``."""

    data: torch.Tensor
    scale: torch.Tensor


def quantize_input(x: torch.Tensor) -> FP8Input:
    """``x`` [..., in] quantized per row as `linear_fp8`'s forward does it (no gradient flows through
    it: `linear_fp8` still takes ``x`` itself for its input gradient)."""
    return FP8Input(*quantize_rows(x.detach().reshape(-1, x.shape[-1])))


def fp8_matmul(x2: torch.Tensor, q: FP8Weight, x_fp8: FP8Input | None = None) -> torch.Tensor:
    """``x2 @ W^T`` for ``x2`` [M, in] in FP8 (forward GEMM, fast accumulation), in ``x2``'s dtype;
    ``x_fp8``: ``x2`` already quantized (`quantize_input`), else it is quantized here."""
    xq, xs = x_fp8 if x_fp8 is not None else quantize_rows(x2)
    return _gemm(xq, xs, q.data, q.scale, x2.dtype, fast_accum=True)


def input_grad_operand(q: FP8Weight, dtype: torch.dtype) -> torch.Tensor:
    """What `fp8_matmul_grad` multiplies by: the transposed FP8 weight ``[in, out]`` (a transient
    1-byte copy) when the input gradient's GEMM is FP8, else the weight dequantized to ``dtype``.
    Made once per weight and call, so a caller that splits the rows (the chunked loss) shares it."""
    return _transposed(q.data) if q.fp8_input_grad else _dequantize(q.data, q.scale, dtype)


def _transposed(data: torch.Tensor) -> torch.Tensor:
    """``data^T`` contiguous: in eager code by the tiled kernel where it runs (torch's copy of a
    transposed byte matrix is slow, `fp8_triton`); compiled graphs leave it to inductor, which fuses it
    into the layer's kernels."""
    if data.t().is_contiguous():  # already made transposed (NF4's fused kernel writes W^T): no copy
        return data.t()
    if not torch.compiler.is_compiling() and fp8_triton.available(data.device):
        return fp8_triton.transpose_bytes(data)
    return data.t().contiguous()


def quantize_output_grad(g2: torch.Tensor, weight_scale: torch.Tensor) -> FP8Input:
    """An output gradient ``g2`` [M, out] as `fp8_matmul_grad`'s FP8 GEMM takes it: the weight's row
    scales ``weight_scale`` [out] folded into its columns, then quantized per row (a caller may fuse
    this with what makes ``g2``, as the chunked loss does)."""
    return FP8Input(*quantize_rows(g2.to(torch.float32) * weight_scale))


def fp8_matmul_grad(
    g2: torch.Tensor, q: FP8Weight, operand: torch.Tensor | None = None, g_fp8: FP8Input | None = None
) -> torch.Tensor:
    """``g2 @ W`` for an output gradient ``g2`` [M, out]: in FP8 with ``W``'s row scales folded into
    ``g2``'s columns (``q.fp8_input_grad``), else in ``g2``'s dtype on the dequantized weight;
    ``operand``: `input_grad_operand` made by the caller; ``g_fp8``: `quantize_output_grad` of ``g2``
    made by the caller (then only ``g2``'s dtype, the result's, is read)."""
    operand = input_grad_operand(q, g2.dtype) if operand is None else operand
    if not q.fp8_input_grad:
        return g2 @ operand
    gq, gs = g_fp8 if g_fp8 is not None else quantize_output_grad(g2, q.scale)
    ones = torch.ones(operand.shape[0], device=operand.device, dtype=torch.float32)
    return _gemm(gq, gs, operand, ones, g2.dtype)


def linear_fp8_forward(
    x: torch.Tensor, q: FP8Weight, bias: torch.Tensor | None, x_fp8: FP8Input | None
) -> torch.Tensor:
    """The forward of an FP8 linear (``x`` [..., in] -> [..., out]): what `linear_fp8`'s autograd
    Function and NF4's FP8 one (`nf4.linear_nf4_fp8`) both compute."""
    y = fp8_matmul(x.reshape(-1, x.shape[-1]), q, x_fp8)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.view(*x.shape[:-1], q.shape[0])


def linear_fp8_grads(
    grad: torch.Tensor, q: FP8Weight | None, bias_grad: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(grad_x, grad_bias)`` of an FP8 linear for the output gradient ``grad`` [..., out]: no input
    gradient where ``q`` is None, no bias gradient unless ``bias_grad``."""
    g2 = grad.reshape(-1, grad.shape[-1])
    grad_x = None if q is None else fp8_matmul_grad(g2, q).view(*grad.shape[:-1], q.shape[1])
    return grad_x, g2.sum(0) if bias_grad else None


class _LinearFP8(torch.autograd.Function):
    """y = x W^T + b with W frozen in FP8; the forward GEMM in FP8, the input gradient's in FP8 when
    ``fp8_input_grad`` else in x's dtype on the dequantized weight (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, data, scale, bias, fp8_input_grad, x_fp8):
        ctx.save_for_backward(data, scale)
        ctx.has_bias, ctx.fp8_input_grad = bias is not None, fp8_input_grad
        return linear_fp8_forward(x, FP8Weight(data, scale, x.dtype, fp8_input_grad), bias, x_fp8)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        data, scale = ctx.saved_tensors
        q = FP8Weight(data, scale, grad.dtype, ctx.fp8_input_grad) if ctx.needs_input_grad[0] else None
        grad_x, grad_bias = linear_fp8_grads(grad, q, ctx.has_bias and ctx.needs_input_grad[3])
        return grad_x, None, None, grad_bias, None, None


def linear_fp8(
    x: torch.Tensor, q: FP8Weight, bias: torch.Tensor | None = None, x_fp8: FP8Input | None = None
) -> torch.Tensor:
    """``x @ W^T (+ bias)`` with a frozen FP8 weight (FP8 GEMMs on FP8 GPUs, emulated elsewhere);
    ``x_fp8``: ``x`` already quantized by `quantize_input` (shared with the other projections of ``x``)."""
    if x.shape[-1] != q.shape[1]:
        raise TunerError(f"linear_fp8: input has {x.shape[-1]} features but the FP8 weight expects {q.shape[1]}")
    return _LinearFP8.apply(x, q.data, q.scale, bias, q.fp8_input_grad, x_fp8)
