"""NF4 (4-bit NormalFloat) weights through bitsandbytes: quantize, dequantize, linear.

The format is QLoRA's: blocks of 64 values share one absmax scale, each value is the index of
the nearest of 16 NormalFloat levels (two per byte), and the block scales are themselves
quantized to 8 bits in blocks of 256 ("double quantization", bitsandbytes'
``compress_statistics=True``), which brings the storage to ~0.516 bytes per parameter.

`NF4Weight` is the quantized payload as four plain tensors (no bitsandbytes objects), so a
module can keep it in buffers that move with ``.to()`` and save with ``state_dict()``;
`NF4Weight.quant_state()` rebuilds bitsandbytes' `QuantState` from them on each call (cheap).

`linear_nf4` dequantizes the weight once per call and runs a plain matmul (what torchtune's
torchao path does and what is fast on a GPU). By default backward dequantizes again for the input
gradient instead of saving the dense weight, so no bf16 copy of the base outlives the call; with
``save_dense=True`` (opt-in for activation-checkpointed layers, whose forward is recomputed right
before their backward anyway) the dense weight is kept from the recompute to the backward, which
saves one of the three dequantizations per step. The weight is frozen: it gets no gradient.

`linear_nf4_fp8` computes with an NF4 weight through FP8 GEMMs instead (QLoRA with ``base_dtype: fp8``):
each call dequantizes the weight to its compute dtype, quantizes it per row to e4m3 (`fp8.quantize_rows`,
the FP8 base's arithmetic) and runs `fp8.linear_fp8`'s GEMMs; the storage stays NF4. By default its
backward dequantizes and quantizes again (nothing but the NF4 payload is kept); ``save_dense=True``
keeps the FP8 copy (1 byte a value) from the recompute to the backward instead.

Dequantization runs one Triton kernel on CUDA (`nf4_triton`, bit-identical to bitsandbytes'; less
GPU time a step than the two below, measured in docs/benchmarks.md),
launched by compiled graphs directly (a ``triton_op``), and bitsandbytes' kernels elsewhere.
Without Triton, `torch.compile` runs the forward's as plain tensor ops (`dequantize_nf4_ops`, also
bit-identical) instead of breaking the graph at every linear layer, and the backward's as an opaque
bitsandbytes op.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F

from tuner.errors import TunerError
from tuner.quantization import nf4_triton
from tuner.quantization._checks import check_weight_to_quantize
from tuner.quantization.fp8 import (
    FP8Input,
    FP8Weight,
    linear_fp8,
    linear_fp8_forward,
    linear_fp8_grads,
    quantize_rows_with,
)
from tuner.quantization.fp8 import row_scales as dense_row_scales

BLOCKSIZE = 64  # values per absmax block (QLoRA's choice)
SCALE_BLOCKSIZE = 256  # absmax values per block of the second quantization (bitsandbytes' fixed size)
COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@functools.lru_cache(maxsize=None)
def bnb_functional() -> ModuleType:
    """Import `bitsandbytes.functional` on first use; a TunerError says how to install it."""
    try:
        # bitsandbytes' CPU backend logs a warning at import when the optional `kernels` package
        # (a fused CPU inference GEMM we never use) is absent; keep it out of training logs.
        cpu_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
        old_level = cpu_logger.level
        cpu_logger.setLevel(logging.ERROR)
        try:
            import bitsandbytes.functional as bnbf
        finally:
            cpu_logger.setLevel(old_level)
    except ImportError as e:
        raise TunerError(f"QLoRA needs bitsandbytes: pip install 'tuner[quantization]' ({e})") from None
    return bnbf


_LOOKUP_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def lookup_tables(device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the 16 NF4 levels, the 256-entry 8-bit map of the second quantization), float32 on `device`.

    Built once per device from bitsandbytes and kept in a plain dict, which `torch.compile` reads
    as constants (it would trace through an ``lru_cache`` and rebuild them in every graph).
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    tables = _LOOKUP_TABLES.get(device)
    if tables is None:
        bnbf = bnb_functional()
        tables = (
            bnbf.get_4bit_type("nf4", device="cpu").to(device=device, dtype=torch.float32),
            bnbf.create_dynamic_map(signed=True).to(device=device, dtype=torch.float32),
        )
        _LOOKUP_TABLES[device] = tables
    return tables


def nf4_sizes(numel: int) -> tuple[int, int, int]:
    """Element counts of (packed bytes, block scales, scales of the block scales) for `numel` values."""
    blocks = math.ceil(numel / BLOCKSIZE)
    return (numel + 1) // 2, blocks, math.ceil(blocks / SCALE_BLOCKSIZE)


def check_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return `dtype` if bitsandbytes can quantize to/from it, else raise a TunerError."""
    if dtype not in COMPUTE_DTYPES:
        raise TunerError(
            f"NF4 compute dtype {dtype} is not supported",
            fix="use torch.bfloat16 (default), torch.float16 or torch.float32",
        )
    return dtype


@dataclass(frozen=True)
class NF4Weight:
    """A 2-D weight in NF4 with double-quantized block scales.

    packed: uint8 [(numel+1)//2], two 4-bit codes per byte (row-major over `shape`).
    absmax: uint8 [blocks], the per-64-value scales quantized to 8 bits.
    absmax_scale: float32 [ceil(blocks/256)], scales of `absmax`'s 256-blocks.
    absmax_offset: float32 [], mean of the block scales (subtracted before their quantization).
    shape, dtype: shape of the original weight, dtype that `dequantize_nf4` returns.
    """

    packed: torch.Tensor
    absmax: torch.Tensor
    absmax_scale: torch.Tensor
    absmax_offset: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        return self.packed.device

    @property
    def nbytes(self) -> int:
        """Bytes of the stored payload."""
        tensors = (self.packed, self.absmax, self.absmax_scale, self.absmax_offset)
        return sum(t.numel() * t.element_size() for t in tensors)

    def quant_state(self):
        """bitsandbytes' `QuantState` over these tensors (no copies)."""
        bnbf = bnb_functional()
        scales = bnbf.QuantState(
            absmax=self.absmax_scale, code=lookup_tables(self.device)[1], blocksize=SCALE_BLOCKSIZE, dtype=torch.float32
        )
        return bnbf.QuantState(
            absmax=self.absmax,
            shape=self.shape,
            blocksize=BLOCKSIZE,
            quant_type="nf4",
            dtype=self.dtype,
            offset=self.absmax_offset,
            state2=scales,
        )


def quantize_nf4(weight: torch.Tensor, dtype: torch.dtype | None = None) -> NF4Weight:
    """Quantize a 2-D floating weight to NF4 (blocksize 64, double quantization) on its device.

    `dtype` is the dtype dequantization returns (default: the weight's own); the weight is cast
    to it first, as bitsandbytes' `Linear4bit` does with its compute dtype.
    """
    check_weight_to_quantize(weight, "quantize_nf4")
    dtype = check_compute_dtype(dtype or weight.dtype)
    packed, qs = bnb_functional().quantize_4bit(
        weight.detach().to(dtype).contiguous(), blocksize=BLOCKSIZE, compress_statistics=True, quant_type="nf4"
    )
    return NF4Weight(packed.view(-1), qs.absmax, qs.state2.absmax, qs.offset.reshape(()).float(), weight.shape, dtype)


def dequantize_nf4(q: NF4Weight) -> torch.Tensor:
    """The dense weight (shape `q.shape`, dtype `q.dtype`) that `q` stands for."""
    return _dequantize(q)


def _dequantize(q: NF4Weight, backward: bool = False) -> torch.Tensor:
    """Compiled: the Triton kernel through its op, else tensor ops that inductor fuses. Eager: the
    Triton kernel where it can run, else bitsandbytes' kernels. ``backward``: for a backward pass
    (only the compiled op tells the two apart; see `nf4_triton`)."""
    triton_ok = nf4_triton.available(q.device)
    if torch.compiler.is_compiling():
        if triton_ok:
            return torch.ops.tuner.dequantize_nf4(
                q.packed,
                q.absmax,
                q.absmax_scale,
                q.absmax_offset,
                *lookup_tables(q.device),
                q.shape[0],
                q.shape[1],
                q.dtype,
                backward,
            )
        if backward:  # opaque, so that the compiler cannot merge it with the forward's tensor ops
            return torch.ops.tuner.dequantize_nf4_bitsandbytes(
                q.packed, q.absmax, q.absmax_scale, q.absmax_offset, q.shape[0], q.shape[1], q.dtype
            )
        return dequantize_nf4_ops(q, *lookup_tables(q.device))
    if triton_ok:
        return nf4_triton.dequantize_nf4_triton(
            q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *lookup_tables(q.device), q.shape, q.dtype
        )
    return bnb_functional().dequantize_4bit(q.packed, q.quant_state())


def dequantize_nf4_ops(q: NF4Weight, levels: torch.Tensor, scale_code: torch.Tensor) -> torch.Tensor:
    """`dequantize_nf4` as plain tensor ops (what `torch.compile` fuses), bit-identical to bitsandbytes.

    Same arithmetic as bitsandbytes' kernels, in float32: block scale = scale_code[absmax] *
    absmax_scale[block // 256] + absmax_offset; value = levels[code] * block scale, rounded once to
    the output dtype. The high nibble of each byte holds the earlier value.
    """
    n = q.shape.numel()
    blocks = q.absmax.numel()
    block_scale = q.absmax_scale.repeat_interleave(SCALE_BLOCKSIZE)[:blocks]
    absmax = scale_code[q.absmax.long()] * block_scale + q.absmax_offset
    codes = torch.stack((q.packed >> 4, q.packed & 0xF), dim=-1).reshape(-1)
    values = levels[codes.long()]
    values = F.pad(values, (0, blocks * BLOCKSIZE - values.numel())).view(blocks, BLOCKSIZE)
    return (values * absmax[:, None]).reshape(-1)[:n].view(q.shape).to(q.dtype)


@torch.library.custom_op("tuner::dequantize_nf4_bitsandbytes", mutates_args=())
def _dequantize_nf4_bitsandbytes(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    out_features: int,
    in_features: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """bitsandbytes' dequantization as an op a compiled backward keeps whole (where Triton is missing)."""
    q = NF4Weight(packed, absmax, absmax_scale, absmax_offset, torch.Size((out_features, in_features)), dtype)
    return bnb_functional().dequantize_4bit(q.packed, q.quant_state())


@_dequantize_nf4_bitsandbytes.register_fake
def _(packed, absmax, absmax_scale, absmax_offset, out_features, in_features, dtype):
    return packed.new_empty((out_features, in_features), dtype=dtype)


class _LinearNF4(torch.autograd.Function):
    """y = x W^T + b with W dequantized per call; backward dequantizes again for the input gradient.

    Takes the NF4 payload as separate tensors (not an `NF4Weight`) so `torch.compile` can trace it.
    Backward's dequantization must never be identical to the forward's: inside a compiled graph
    identical ops would be merged into one dense weight that forward then keeps for backward, which
    for a whole model is every layer's bf16 weights (several times the NF4 peak; docs/benchmarks.md).
    """

    @staticmethod
    def forward(ctx, x, packed, absmax, absmax_scale, absmax_offset, bias, shape, dtype):
        q = NF4Weight(packed, absmax, absmax_scale, absmax_offset, shape, dtype)
        ctx.save_for_backward(packed, absmax, absmax_scale, absmax_offset)
        ctx.shape, ctx.dtype = shape, dtype
        return F.linear(x, dequantize_nf4(q).to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            weight = _dequantize(NF4Weight(*ctx.saved_tensors, ctx.shape, ctx.dtype), backward=True)
            grad_x = grad @ weight.to(grad.dtype)
        if ctx.needs_input_grad[5]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, None, None, None, None, grad_bias, None, None


def linear_nf4(
    x: torch.Tensor, q: NF4Weight, bias: torch.Tensor | None = None, *, save_dense: bool = False
) -> torch.Tensor:
    """`F.linear(x, dequantize_nf4(q).to(x.dtype), bias)` with a frozen NF4 weight.

    By default the dense weight lives only during the matmul: backward dequantizes again (the
    torchtune / bitsandbytes trade of a fast dequantize kernel for not keeping a bf16 copy per
    layer). ``save_dense=True`` lets autograd keep it for backward instead: right for a layer under
    activation checkpointing, whose recompute runs just before its backward.
    """
    if x.shape[-1] != q.shape[1]:
        raise TunerError(f"linear_nf4: input has {x.shape[-1]} features but the NF4 weight expects {q.shape[1]}")
    if save_dense:
        return F.linear(x, dequantize_nf4(q).to(x.dtype), bias)
    return _LinearNF4.apply(x, q.packed, q.absmax, q.absmax_scale, q.absmax_offset, bias, q.shape, q.dtype)


def _fused_fp8(q: NF4Weight) -> bool:
    """Whether `q`'s FP8 weight comes from the fused kernels (`nf4_triton`)."""
    return nf4_triton.available(q.device) and nf4_triton.fp8_rows_fits(q.shape)


def fp8_row_scales(q: NF4Weight) -> torch.Tensor:
    """float32 ``[2, out]``: each row's ``to_fp8`` and ``scale`` (`fp8.row_scales`) of ``q`` dequantized
    to its compute dtype (a Triton kernel on the 4-bit codes where it runs). Constants of a frozen
    weight: `compute_nf4_in_fp8` keeps them, so that each call only writes the e4m3 weight."""
    if _fused_fp8(q):
        payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *lookup_tables(q.device))
        if torch.compiler.is_compiling():
            to_fp8, scale = torch.ops.tuner.nf4_row_scales(*payload, *q.shape, q.dtype)
        else:
            to_fp8, scale = nf4_triton.nf4_row_scales(*payload, q.shape, q.dtype)
    else:
        to_fp8, scale = dense_row_scales(dequantize_nf4(q))  # the dequantization the forward uses here
    return torch.stack((to_fp8.view(-1), scale.view(-1)))


def _nf4_as_fp8(
    q: NF4Weight, dtype: torch.dtype, fp8_input_grad: bool, row_scales: torch.Tensor, backward: bool = False
) -> FP8Weight:
    """``q`` dequantized to its compute dtype, then quantized to e4m3 per row with ``row_scales``
    (`fp8_row_scales(q)`) as an `FP8Weight` computing in ``dtype``: `fp8.quantize_rows`' numbers.
    ``backward``: for a backward pass (see `_dequantize`). Where Triton runs, a kernel writes it from
    the 4-bit codes (same bits); for the FP8 input gradient as ``W^T`` row-major, so ``data`` is a
    transposed view and `fp8.input_grad_operand` copies nothing."""
    to_fp8, scale = row_scales
    transposed = backward and fp8_input_grad
    if _fused_fp8(q):
        payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *lookup_tables(q.device))
        if torch.compiler.is_compiling():
            data = torch.ops.tuner.nf4_to_fp8(*payload, to_fp8, *q.shape, q.dtype, transposed, backward)
        else:
            data = nf4_triton.nf4_to_fp8(*payload, to_fp8, q.shape, q.dtype, transposed=transposed, backward=backward)
        return FP8Weight(data.t() if transposed else data, scale, dtype, fp8_input_grad)
    data = quantize_rows_with(_dequantize(q, backward=backward), to_fp8[:, None])
    return FP8Weight(data, scale, dtype, fp8_input_grad)


class _LinearNF4FP8(torch.autograd.Function):
    """y = x W^T + b through `fp8_matmul` on the NF4 weight made FP8 per call; backward makes it again
    from the NF4 payload (never the forward's copy, as in `_LinearNF4`) for `fp8_matmul_grad`, with
    the forward's row scales."""

    @staticmethod
    def forward(
        ctx, x, packed, absmax, absmax_scale, absmax_offset, bias, shape, dtype, fp8_input_grad, x_fp8, row_scales
    ):
        q = NF4Weight(packed, absmax, absmax_scale, absmax_offset, shape, dtype)
        row_scales = fp8_row_scales(q) if row_scales is None else row_scales
        ctx.save_for_backward(packed, absmax, absmax_scale, absmax_offset, row_scales)
        ctx.shape, ctx.dtype, ctx.fp8_input_grad, ctx.has_bias = shape, dtype, fp8_input_grad, bias is not None
        return linear_fp8_forward(x, _nf4_as_fp8(q, x.dtype, fp8_input_grad, row_scales), bias, x_fp8)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w = None
        if ctx.needs_input_grad[0]:
            *payload, row_scales = ctx.saved_tensors
            q = NF4Weight(*payload, ctx.shape, ctx.dtype)
            w = _nf4_as_fp8(q, grad.dtype, ctx.fp8_input_grad, row_scales, backward=True)
        grad_x, grad_bias = linear_fp8_grads(grad, w, ctx.has_bias and ctx.needs_input_grad[5])
        return grad_x, None, None, None, None, grad_bias, None, None, None, None, None


def linear_nf4_fp8(
    x: torch.Tensor,
    q: NF4Weight,
    bias: torch.Tensor | None = None,
    *,
    fp8_input_grad: bool = True,
    x_fp8: FP8Input | None = None,
    save_dense: bool = False,
    row_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """``linear_fp8(x, _nf4_as_fp8(q, x.dtype, fp8_input_grad), bias, x_fp8)`` with a frozen NF4 weight:
    FP8 GEMMs over NF4 storage (``fp8_input_grad``: the input gradient's GEMM in FP8 too, else in
    ``x``'s dtype on the FP8 weight dequantized). By default backward makes the FP8 weight again from
    NF4 (no per-layer copy outlives the call); ``save_dense=True`` keeps the FP8 copy for backward
    (activation-checkpointed layers, as `linear_nf4`'s), except where the fused kernel makes the FP8
    input gradient's ``W^T`` from NF4: that costs less than transposing the kept copy.
    ``row_scales``: `fp8_row_scales(q)`, kept by the caller (the weight is frozen), else computed by
    each forward (and kept for its backward)."""
    if x.shape[-1] != q.shape[1]:
        raise TunerError(f"linear_nf4_fp8: input has {x.shape[-1]} features but the NF4 weight expects {q.shape[1]}")
    if save_dense and not (fp8_input_grad and _fused_fp8(q)):
        row_scales = fp8_row_scales(q) if row_scales is None else row_scales
        return linear_fp8(x, _nf4_as_fp8(q, x.dtype, fp8_input_grad, row_scales), bias, x_fp8)
    return _LinearNF4FP8.apply(
        x,
        q.packed,
        q.absmax,
        q.absmax_scale,
        q.absmax_offset,
        bias,
        q.shape,
        q.dtype,
        fp8_input_grad,
        x_fp8,
        row_scales,
    )
