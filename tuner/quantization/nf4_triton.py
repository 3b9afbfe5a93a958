"""NF4 dequantization as one Triton kernel, bit-identical to bitsandbytes'.

bitsandbytes dequantizes a double-quantized NF4 weight in three launches (the 8-bit block scales,
their offset, then the 4-bit codes) behind a few hundred microseconds of Python; the tensor-op
version that `torch.compile` fuses (`nf4.dequantize_nf4_ops`) is one launch but writes its
interleaved output slowly. This kernel reads each packed byte once, computes both values'
block scale and writes them next to each other: a QLoRA step on the 8B shape dequantizes every
base weight three times (forward, recompute, backward), so this is most of what NF4 costs.

Arithmetic matches bitsandbytes' kernels operation for operation in float32: block scale =
scale_code[absmax] * absmax_scale[block // 256], then + offset (rounded separately: no fused
multiply-add), value = level[code] * block scale, rounded once to the output dtype.
"""
from __future__ import annotations

import functools
import os

import torch

BYTES_PER_PROGRAM = 2048  # 4096 values: 64 NF4 blocks


@functools.lru_cache(maxsize=None)
def _triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on `device`: CUDA with Triton installed, or the CPU under
    Triton's interpreter (``TRITON_INTERPRET=1``, how the tests check the kernel without a GPU)."""
    if _triton() is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _interpreting())


@functools.lru_cache(maxsize=None)
def _kernel(interpreted: bool):
    """The jitted kernel; `triton.jit` reads TRITON_INTERPRET when it runs, hence one per mode."""
    triton, tl = _triton()

    @triton.jit
    def dequantize_nf4_kernel(packed_ptr, absmax_ptr, absmax_scale_ptr, offset_ptr, levels_ptr, code_ptr, out_ptr,
                              numel, n_bytes, BYTES: tl.constexpr, BF16_BITS: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        byte = pid * BYTES + tl.arange(0, BYTES)
        inside = byte < n_bytes
        codes = tl.load(packed_ptr + byte, mask=inside, other=0).to(tl.int32)
        block = byte // 32  # 64 values = 32 bytes per block scale
        scale = tl.load(code_ptr + tl.load(absmax_ptr + block, mask=inside, other=0).to(tl.int32))
        scale = scale * tl.load(absmax_scale_ptr + block // 256, mask=inside, other=0.0)
        scale = scale + tl.load(offset_ptr)
        high = tl.load(levels_ptr + (codes >> 4)) * scale  # the high nibble holds the earlier value
        low = tl.load(levels_ptr + (codes & 15)) * scale
        values = tl.interleave(high, low)
        if BF16_BITS:  # round to nearest even by hand: the same on every backend (out is bf16 seen as int16)
            bits = values.to(tl.int32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            values = (bits >> 16).to(tl.int16)
        else:
            values = values.to(out_ptr.dtype.element_ty)
        index = pid * (2 * BYTES) + tl.arange(0, 2 * BYTES)
        tl.store(out_ptr + index, values, mask=index < numel)

    return dequantize_nf4_kernel


def dequantize_nf4_triton(packed: torch.Tensor, absmax: torch.Tensor, absmax_scale: torch.Tensor,
                          absmax_offset: torch.Tensor, levels: torch.Tensor, scale_code: torch.Tensor,
                          shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """The dense weight of `shape` in `dtype` from an NF4 payload (see `nf4.NF4Weight` for the fields)."""
    numel = shape.numel()
    out = torch.empty(shape, dtype=dtype, device=packed.device)
    n_bytes = packed.numel()
    grid = (-(-n_bytes // BYTES_PER_PROGRAM),)
    bf16 = dtype == torch.bfloat16
    _kernel(_interpreting())[grid](packed, absmax, absmax_scale, absmax_offset.reshape(1), levels, scale_code,
                    out.view(torch.int16) if bf16 else out, numel, n_bytes,
                    BYTES=BYTES_PER_PROGRAM, BF16_BITS=bf16, num_warps=8, enable_fp_fusion=False)
    return out

