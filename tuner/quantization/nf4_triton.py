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


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on `device`: CUDA with Triton installed, or the CPU under
    Triton's interpreter (``TRITON_INTERPRET=1``, how the tests check the kernel without a GPU)."""
    if not _OP_REGISTERED:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def _block_scales(absmax_ptr, absmax_scale_ptr, offset_ptr, code_ptr, byte, inside, EXACT_MUL: tl.constexpr):
    """The float32 scale of the 64-value block that each packed byte at ``byte`` belongs to."""
    block = byte // 32  # 64 values = 32 bytes per block scale
    scale = tl.load(code_ptr + tl.load(absmax_ptr + block, mask=inside, other=0).to(tl.int32))
    scale_of_scale = tl.load(absmax_scale_ptr + block // 256, mask=inside, other=0.0)
    if EXACT_MUL:  # rounded on its own, as bitsandbytes does, before the offset is added
        scale = tl.inline_asm_elementwise(
            "mul.rn.f32 $0, $1, $2;", "=f,f,f", [scale, scale_of_scale], dtype=tl.float32, is_pure=True, pack=1
        )
    else:  # the interpreter computes in numpy, which never fuses
        scale = scale * scale_of_scale
    return scale + tl.load(offset_ptr)


def _byte_values(
    packed_ptr, absmax_ptr, absmax_scale_ptr, offset_ptr, levels_ptr, code_ptr, byte, inside, EXACT_MUL: tl.constexpr
):
    """The two float32 values (earlier, later) that each packed byte at ``byte`` stands for, before
    rounding to the compute dtype: bitsandbytes' arithmetic, shared by the kernels."""
    codes = tl.load(packed_ptr + byte, mask=inside, other=0).to(tl.int32)
    scale = _block_scales(absmax_ptr, absmax_scale_ptr, offset_ptr, code_ptr, byte, inside, EXACT_MUL)
    high = tl.load(levels_ptr + (codes >> 4)) * scale  # the high nibble holds the earlier value
    low = tl.load(levels_ptr + (codes & 15)) * scale
    return high, low


def _round_to(values, ROUND_TO: tl.constexpr, NATIVE: tl.constexpr):
    """float32 ``values`` rounded to the compute dtype (0: bfloat16, 1: float16, 2: float32) and back,
    to nearest even; ``NATIVE``: by the GPU's conversions, else bfloat16 by hand (the interpreter's
    numpy has no bfloat16)."""
    if ROUND_TO == 0:
        if NATIVE:
            values = values.to(tl.bfloat16, fp_downcast_rounding="rtne").to(tl.float32)
        else:
            bits = values.to(tl.int32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
            values = bits.to(tl.float32, bitcast=True)
    elif ROUND_TO == 1:
        values = values.to(tl.float16, fp_downcast_rounding="rtne").to(tl.float32)
    return values


def _e4m3_bits(y):
    """The float8_e4m3fn bit pattern (as int32) of float32 ``y`` in [-448, 448], rounded to nearest
    even as torch's cast does; by hand, for the interpreter (numpy has no FP8)."""
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 24) & 0x80
    magnitude = bits & 0x7FFFFFFF
    normal = (magnitude + 0x7FFFF + ((magnitude >> 20) & 1)) >> 20  # exponent and 3 mantissa bits
    normal = normal - (120 << 3)  # float32's exponent bias 127 to e4m3's 7
    # below 2^-6 the step is 2^-9: the code is the value in steps, rounded (the float32 add rounds
    # to an integer: 2^23 has a unit last place), and 8 steps is the smallest normal's code
    subnormal = ((tl.abs(y) * 512.0 + 8388608.0) - 8388608.0).to(tl.int32)
    return tl.where(magnitude >= 0x3C800000, normal, subnormal) | sign


def e4m3_codes(y, NATIVE: tl.constexpr):
    """float32 ``y`` as float8_e4m3fn bytes (uint8): clamped to +-448, rounded to nearest even."""
    y = tl.clamp(y, -448.0, 448.0)
    if NATIVE:
        return y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
    return _e4m3_bits(y).to(tl.uint8)


def e4m3_row_scales(amax):
    """``(to_fp8, scale)`` float32 of rows whose largest magnitude is ``amax``: `fp8.row_scales`'
    arithmetic, 448 / amax in float64 (IEEE division, unlike float32's '/') cast to float32, and its
    reciprocal correctly rounded (as torch's reciprocal)."""
    to_fp8 = (448.0 / tl.maximum(amax.to(tl.float64), 1e-12)).to(tl.float32)
    return to_fp8, tl.math.div_rn(tl.full(to_fp8.shape, 1.0, tl.float32), to_fp8)


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
    high, low = _byte_values(
        packed_ptr, absmax_ptr, absmax_scale_ptr, offset_ptr, levels_ptr, code_ptr, byte, inside, EXACT_MUL
    )
    values = tl.interleave(high, low)
    if BF16_BITS:  # round to nearest even by hand: the same on every backend (out is bf16 seen as int16)
        bits = values.to(tl.int32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        values = (bits >> 16).to(tl.int16)
    else:
        values = values.to(out_ptr.dtype.element_ty)
    index = pid * (2 * BYTES) + tl.arange(0, 2 * BYTES)
    tl.store(out_ptr + index, values, mask=index < numel)


def _fp8_row_scales_kernel(
    packed_ptr,
    absmax_ptr,
    absmax_scale_ptr,
    offset_ptr,
    levels_ptr,
    code_ptr,
    scale_ptr,
    to_fp8_ptr,
    n_rows,
    row_bytes,
    ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
    ROUND_TO: tl.constexpr,
    NATIVE: tl.constexpr,
):
    # Each row's largest magnitude, from each byte's larger level times its block scale (|l s| = |l||s|,
    # and rounding to the compute dtype is monotonic, so it may come after the max), then its scales.
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    first_byte = rows[:, None] * row_bytes
    largest = tl.zeros([ROWS, CHUNK], dtype=tl.float32)
    for start in range(0, row_bytes, CHUNK):
        column = start + tl.arange(0, CHUNK)
        inside = row_ok[:, None] & (column[None, :] < row_bytes)
        byte = first_byte + column[None, :]
        codes = tl.load(packed_ptr + byte, mask=inside, other=0).to(tl.int32)
        level = tl.maximum(tl.abs(tl.load(levels_ptr + (codes >> 4))), tl.abs(tl.load(levels_ptr + (codes & 15))))
        scale = _block_scales(absmax_ptr, absmax_scale_ptr, offset_ptr, code_ptr, byte, inside, NATIVE)
        largest = tl.maximum(largest, tl.where(inside, level * tl.abs(scale), 0.0))
    to_fp8, scale = e4m3_row_scales(_round_to(tl.max(largest, axis=1), ROUND_TO, NATIVE))
    tl.store(to_fp8_ptr + rows, to_fp8, mask=row_ok)
    tl.store(scale_ptr + rows, scale, mask=row_ok)


def _fp8_rows_write_kernel(
    packed_ptr,
    absmax_ptr,
    absmax_scale_ptr,
    offset_ptr,
    levels_ptr,
    code_ptr,
    to_fp8_ptr,
    out_ptr,
    n_rows,
    row_bytes,
    ROWS: tl.constexpr,
    BYTES: tl.constexpr,
    ROUND_TO: tl.constexpr,
    TRANSPOSED: tl.constexpr,
    NATIVE: tl.constexpr,
    BACKWARD: tl.constexpr,
):
    # A tile of ROWS rows x 2 * BYTES columns in e4m3: W [out, in] row-major, or TRANSPOSED W^T
    # [in, out] row-major (the input gradient's FP8 GEMM operand). BACKWARD: as in the dequantization
    # kernel.
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    column = tl.program_id(1) * BYTES + tl.arange(0, BYTES)
    row_ok = rows < n_rows
    inside = row_ok[:, None] & (column[None, :] < row_bytes)
    high, low = _byte_values(
        packed_ptr,
        absmax_ptr,
        absmax_scale_ptr,
        offset_ptr,
        levels_ptr,
        code_ptr,
        rows[:, None] * row_bytes + column[None, :],
        inside,
        NATIVE,
    )
    to_fp8 = tl.load(to_fp8_ptr + rows, mask=row_ok, other=0.0)[:, None]
    high = e4m3_codes(_round_to(high, ROUND_TO, NATIVE) * to_fp8, NATIVE)
    low = e4m3_codes(_round_to(low, ROUND_TO, NATIVE) * to_fp8, NATIVE)
    codes = tl.interleave(high, low)
    value = tl.program_id(1) * (2 * BYTES) + tl.arange(0, 2 * BYTES)
    written = row_ok[:, None] & (value[None, :] < 2 * row_bytes)
    if TRANSPOSED:
        tl.store(out_ptr + value[None, :] * n_rows + rows[:, None], codes, mask=written)
    else:
        tl.store(out_ptr + rows[:, None] * (2 * row_bytes) + value[None, :], codes, mask=written)


if triton is not None:
    _block_scales = triton.jit(_block_scales)
    _byte_values = triton.jit(_byte_values)
    _round_to = triton.jit(_round_to)
    _e4m3_bits = triton.jit(_e4m3_bits)
    e4m3_codes = triton.jit(e4m3_codes)
    e4m3_row_scales = triton.jit(e4m3_row_scales)
    _dequantize_nf4_kernel = triton.jit(_dequantize_nf4_kernel)
    _fp8_row_scales_kernel = triton.jit(_fp8_row_scales_kernel)
    _fp8_rows_write_kernel = triton.jit(_fp8_rows_write_kernel)


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
        EXACT_MUL=not interpreting(),
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


_ROUND_TO = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
# Work per program of the NF4 -> e4m3 kernels, the fastest of three settings timed in the QLoRA 8B
# step (docs/benchmarks.md): bytes of a row per loop step and bytes per program of the row scales;
# bytes along a row and bytes per program of the tiles.
SCALES_CHUNK, SCALES_BYTES, TILE_ROW_BYTES, TILE_BYTES = 1024, 4096, 256, 4096


def fp8_rows_fits(shape: torch.Size) -> bool:
    """Whether `nf4_row_scales` and `nf4_to_fp8` take an NF4 weight of ``shape`` [out, in]: rows of whole bytes (an
    even number of input features), indices within int32; others dequantize and quantize in two steps."""
    return len(shape) == 2 and shape[1] % 2 == 0 and 0 < shape.numel() < 2**31


def _pow2_at_most(n: int, cap: int) -> int:
    return min(cap, triton.next_power_of_2(n))


def nf4_row_scales(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    levels: torch.Tensor,
    scale_code: torch.Tensor,
    shape: torch.Size,
    dtype: torch.dtype,
    *,
    traced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to_fp8, scale)``, float32 ``[out]`` each: what `fp8.row_scales` gives for the NF4 weight
    dequantized to ``dtype`` (the multiplier to e4m3 and its reciprocal), from the 4-bit codes, bit for
    bit. With `nf4_to_fp8` it is ``fp8.quantize_rows(dequantize_nf4(q))`` without the dense copy that
    the two-step path writes and reads. ``shape`` must pass `fp8_rows_fits`."""
    rows, columns = shape
    row_bytes = columns // 2
    scale = torch.empty(rows, dtype=torch.float32, device=packed.device)
    to_fp8 = torch.empty(rows, dtype=torch.float32, device=packed.device)
    chunk = _pow2_at_most(row_bytes, SCALES_CHUNK)
    scales_rows = _pow2_at_most(rows, max(1, SCALES_BYTES // chunk))
    kernel = wrap_triton(_fp8_row_scales_kernel) if traced else _fp8_row_scales_kernel
    kernel[(triton.cdiv(rows, scales_rows),)](
        packed,
        absmax,
        absmax_scale,
        absmax_offset.reshape(1),
        levels,
        scale_code,
        scale,
        to_fp8,
        rows,
        row_bytes,
        ROWS=scales_rows,
        CHUNK=chunk,
        ROUND_TO=_ROUND_TO[dtype],
        NATIVE=not interpreting(),
        num_warps=4,
    )
    return to_fp8, scale


def nf4_to_fp8(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    levels: torch.Tensor,
    scale_code: torch.Tensor,
    to_fp8: torch.Tensor,
    shape: torch.Size,
    dtype: torch.dtype,
    *,
    transposed: bool = False,
    backward: bool = False,
    traced: bool = False,
) -> torch.Tensor:
    """The NF4 weight (rounded to ``dtype``) times each row's ``to_fp8`` [out], in e4m3: ``[out, in]``,
    or with ``transposed`` laid out as ``W^T``, a contiguous ``[in, out]`` (the FP8 input gradient's
    GEMM operand, without a transposing copy). ``backward``, ``traced``: as for `dequantize_nf4_triton`."""
    rows, columns = shape
    row_bytes = columns // 2
    out = torch.empty((columns, rows) if transposed else (rows, columns), dtype=torch.uint8, device=packed.device)
    # tiles whose stores are contiguous runs in either layout: 2 x tile_bytes values along a row, or
    # tile_rows values along a column of W^T
    tile_bytes = _pow2_at_most(row_bytes, 32 if transposed else TILE_ROW_BYTES)
    tile_rows = _pow2_at_most(rows, TILE_BYTES // tile_bytes)
    kernel = wrap_triton(_fp8_rows_write_kernel) if traced else _fp8_rows_write_kernel
    kernel[(triton.cdiv(rows, tile_rows), triton.cdiv(row_bytes, tile_bytes))](
        packed,
        absmax,
        absmax_scale,
        absmax_offset.reshape(1),
        levels,
        scale_code,
        to_fp8,
        out,
        rows,
        row_bytes,
        ROWS=tile_rows,
        BYTES=tile_bytes,
        ROUND_TO=_ROUND_TO[dtype],
        TRANSPOSED=transposed,
        NATIVE=not interpreting(),
        BACKWARD=backward,
        num_warps=4,
    )
    return out.view(torch.float8_e4m3fn)


def _nf4_row_scales_op(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    levels: torch.Tensor,
    scale_code: torch.Tensor,
    out_features: int,
    in_features: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`nf4_row_scales` as an op that compiled graphs call (and inductor launches directly)."""
    payload = (packed, absmax, absmax_scale, absmax_offset, levels, scale_code)
    return nf4_row_scales(*payload, torch.Size((out_features, in_features)), dtype, traced=True)


def _nf4_to_fp8_op(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: torch.Tensor,
    absmax_offset: torch.Tensor,
    levels: torch.Tensor,
    scale_code: torch.Tensor,
    to_fp8: torch.Tensor,
    out_features: int,
    in_features: int,
    dtype: torch.dtype,
    transposed: bool,
    backward: bool,
) -> torch.Tensor:
    """`nf4_to_fp8` as an op that compiled graphs call (and inductor launches directly)."""
    payload = (packed, absmax, absmax_scale, absmax_offset, levels, scale_code)
    shape = torch.Size((out_features, in_features))
    return nf4_to_fp8(*payload, to_fp8, shape, dtype, transposed=transposed, backward=backward, traced=True)


# Registering a triton_op imports inductor (~1.5 s); only a machine that can run the kernel pays it.
_OP_REGISTERED = triton is not None and (torch.cuda.is_available() or interpreting())
if _OP_REGISTERED:
    torch.library.triton_op("tuner::dequantize_nf4", _dequantize_nf4_op, mutates_args=())
    torch.library.triton_op("tuner::nf4_row_scales", _nf4_row_scales_op, mutates_args=())
    torch.library.triton_op("tuner::nf4_to_fp8", _nf4_to_fp8_op, mutates_args=())
