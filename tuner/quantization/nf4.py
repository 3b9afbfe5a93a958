"""NF4 (4-bit NormalFloat) weights through bitsandbytes: quantize, dequantize, linear.

The format is QLoRA's: blocks of 64 values share one absmax scale, each value is the index of
the nearest of 16 NormalFloat levels (two per byte), and the block scales are themselves
quantized to 8 bits in blocks of 256 ("double quantization", bitsandbytes'
``compress_statistics=True``), which brings the storage to ~0.516 bytes per parameter.

`NF4Weight` is the quantized payload as four plain tensors (no bitsandbytes objects), so a
module can keep it in buffers that move with ``.to()`` and save with ``state_dict()``;
`NF4Weight.quant_state()` rebuilds bitsandbytes' `QuantState` from them on each call (cheap).

`linear_nf4` dequantizes the weight once per call and runs a plain matmul (what torchtune's
torchao path does and what is fast on a GPU); backward dequantizes again for the input gradient
instead of saving the dense weight, so no bf16 copy of the base outlives the call. The weight is
frozen: it gets no gradient.
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

BLOCKSIZE = 64          # values per absmax block (QLoRA's choice)
SCALE_BLOCKSIZE = 256   # absmax values per block of the second quantization (bitsandbytes' fixed size)
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


@functools.lru_cache(maxsize=None)
def _scale_code(device: torch.device) -> torch.Tensor:
    """The 8-bit dynamic map bitsandbytes uses for the second quantization, on `device`."""
    return bnb_functional().create_dynamic_map(signed=True).to(device=device, dtype=torch.float32)


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
            absmax=self.absmax_scale, code=_scale_code(self.device), blocksize=SCALE_BLOCKSIZE, dtype=torch.float32
        )
        return bnbf.QuantState(
            absmax=self.absmax, shape=self.shape, blocksize=BLOCKSIZE, quant_type="nf4",
            dtype=self.dtype, offset=self.absmax_offset, state2=scales,
        )


def quantize_nf4(weight: torch.Tensor, dtype: torch.dtype | None = None) -> NF4Weight:
    """Quantize a 2-D floating weight to NF4 (blocksize 64, double quantization) on its device.

    `dtype` is the dtype dequantization returns (default: the weight's own); the weight is cast
    to it first, as bitsandbytes' `Linear4bit` does with its compute dtype.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        is_tensor = isinstance(weight, torch.Tensor)
        what = f"a {weight.dim()}-D {weight.dtype} tensor" if is_tensor else type(weight).__name__
        raise TunerError(f"quantize_nf4 needs a 2-D floating-point weight, got {what}")
    if weight.is_meta:
        raise TunerError("quantize_nf4 got a weight on the meta device, which has no values",
                         fix="load real weights first (load_state_dict(..., assign=True) or quantize_state_dict_into)")
    dtype = check_compute_dtype(dtype or weight.dtype)
    packed, qs = bnb_functional().quantize_4bit(
        weight.detach().to(dtype).contiguous(), blocksize=BLOCKSIZE, compress_statistics=True, quant_type="nf4"
    )
    return NF4Weight(packed.view(-1), qs.absmax, qs.state2.absmax, qs.offset.reshape(()).float(), weight.shape, dtype)


def dequantize_nf4(q: NF4Weight) -> torch.Tensor:
    """The dense weight (shape `q.shape`, dtype `q.dtype`) that `q` stands for."""
    return bnb_functional().dequantize_4bit(q.packed, q.quant_state())


class _LinearNF4(torch.autograd.Function):
    """y = x W^T + b with W dequantized per call; backward returns the input (and bias) gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: NF4Weight, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.q = q
        return F.linear(x, dequantize_nf4(q).to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ dequantize_nf4(ctx.q).to(grad.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, None, grad_bias


def linear_nf4(x: torch.Tensor, q: NF4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, dequantize_nf4(q).to(x.dtype), bias)` with a frozen NF4 weight.

    The dense weight lives only during the matmul: backward dequantizes again (the torchtune /
    bitsandbytes trade of a fast dequantize kernel for not keeping a bf16 copy per layer).
    """
    if x.shape[-1] != q.shape[1]:
        raise TunerError(f"linear_nf4: input has {x.shape[-1]} features but the NF4 weight expects {q.shape[1]}")
    return _LinearNF4.apply(x, q, bias)
