"""NF4 dequantization as one Triton kernel, bit-identical to bitsandbytes'.

bitsandbytes dequantizes a double-quantized NF4 weight in three launches (the 8-bit block scales,
their offset, then the 4-bit codes) behind Python-side work on each call; the tensor-op
version that `torch.compile` fuses (`nf4.dequantize_nf4_ops`) is one launch but writes its
interleaved output slowly. This kernel reads each packed byte once, computes both values'
block scale and writes them next to each other: a QLoRA step on the 8B shape dequantizes every
base weight three times (forward, recompute, backward), so this is most of what NF4 costs.

Arithmetic matches bitsandbytes' kernels operation for operation in float32: block scale =
scale_code[absmax] * absmax_scale[block // 256], then + offset (rounded separately: the product is
an explicit ``mul.rn``, which is never contracted into a fused multiply-add), value = level[code] *
block scale, rounded once to the output dtype.

Compiled graphs call it through `torch.ops.tuner.dequantize_nf4`, a ``triton_op``: inductor then
launches the kernel from its generated code like its own kernels, instead of dispatching a Python
custom op that launches through Triton's Python launcher (a QLoRA step makes one per base weight and
dequantization, hundreds a step; their CPU time made the step launch-bound on slower hosts).
"""

from __future__ import annotations

import os

import torch
from torch.library import wrap_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the tensor-op and bitsandbytes paths serve instead
    triton = tl = None

BYTES_PER_PROGRAM = 2048  # 4096 values: 64 NF4 blocks


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on `device`: CUDA with Triton installed, or the CPU under
    Triton's interpreter (``TRITON_INTERPRET=1``, how the tests check the kernel without a GPU)."""
    if not _OP_REGISTERED:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _interpreting())


def _dequantize_nf4_kernel(
    packed_ptr,
    absmax_ptr,
    absmax_scale_ptr,
    offset_ptr,
    levels_ptr,
    code_ptr,
    out_ptr,
    numel,
    n_bytes,
    BYTES: tl.constexpr,
    BF16_BITS: tl.constexpr,
    EXACT_MUL: tl.constexpr,
    BACKWARD: tl.constexpr,
):
    # BACKWARD changes nothing here: it keeps a compiled graph's forward and backward calls apart, so
    # that the compiler never merges them into one dense weight kept from forward to backward.
    pid = tl.program_id(0).to(tl.int64)
    byte = pid * BYTES + tl.arange(0, BYTES)
    inside = byte < n_bytes
    codes = tl.load(packed_ptr + byte, mask=inside, other=0).to(tl.int32)
    block = byte // 32  # 64 values = 32 bytes per block scale
    scale = tl.load(code_ptr + tl.load(absmax_ptr + block, mask=inside, other=0).to(tl.int32))
    scale_of_scale = tl.load(absmax_scale_ptr + block // 256, mask=inside, other=0.0)
    if EXACT_MUL:  # rounded on its own, as bitsandbytes does, before the offset is added
        scale = tl.inline_asm_elementwise(
            "mul.rn.f32 $0, $1, $2;", "=f,f,f", [scale, scale_of_scale], dtype=tl.float32, is_pure=True, pack=1
        )
    else:  # the interpreter computes in numpy, which never fuses
        scale = scale * scale_of_scale
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


if triton is not None:
    _dequantize_nf4_kernel = triton.jit(_dequantize_nf4_kernel)


def dequantize_nf4_triton(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    levels: torch.Tensor,
    scale_code: torch.Tensor,
    shape: torch.Size,
    dtype: torch.dtype,
    *,
    backward: bool = False,
    traced: bool = False,
) -> torch.Tensor:
    """The dense weight of `shape` in `dtype` from an NF4 payload (see `nf4.NF4Weight` for the fields).

    ``backward``: the call serves a backward pass (see the kernel's BACKWARD). ``traced``: launch
    through ``wrap_triton``, as the body of the `triton_op` that compiled graphs call.
    """
    numel = shape.numel()
    bf16 = dtype == torch.bfloat16
    out = torch.empty(shape, dtype=torch.int16 if bf16 else dtype, device=packed.device)
    n_bytes = packed.numel()
    grid = (-(-n_bytes // BYTES_PER_PROGRAM),)
    kernel = _dequantize_nf4_kernel
    if traced:
        kernel = wrap_triton(kernel)
    kernel[grid](
        packed,
        absmax,
        absmax_scale,
        absmax_offset.reshape(1),
        levels,
        scale_code,
        out,
        numel,
        n_bytes,
        BYTES=BYTES_PER_PROGRAM,
        BF16_BITS=bf16,
        EXACT_MUL=not _interpreting(),
        BACKWARD=backward,
        num_warps=8,
    )
    return out.view(torch.bfloat16) if bf16 else out


def _dequantize_nf4_op(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    levels: torch.Tensor,
    scale_code: torch.Tensor,
    out_features: int,
    in_features: int,
    dtype: torch.dtype,
    backward: bool,
) -> torch.Tensor:
    """`dequantize_nf4_triton` as an op that compiled graphs call (and inductor launches directly)."""
    return dequantize_nf4_triton(
        packed,
        absmax,
        absmax_scale,
        absmax_offset,
        levels,
        scale_code,
        torch.Size((out_features, in_features)),
        dtype,
        backward=backward,
        traced=True,
    )


# Registering a triton_op imports inductor (~1.5 s); only a machine that can run the kernel pays it.
_OP_REGISTERED = triton is not None and (torch.cuda.is_available() or _interpreting())
if _OP_REGISTERED:
    torch.library.triton_op("tuner::dequantize_nf4", _dequantize_nf4_op, mutates_args=())
