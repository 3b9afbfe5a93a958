"""The transposed copy of an FP8 weight as one tiled Triton kernel.

An FP8 input-gradient GEMM needs the frozen weight ``[out, in]`` as ``W^T`` row-major
(`fp8.input_grad_operand`), a transient 1-byte copy made once per weight and step. torch's copy of
a transposed byte matrix runs at ~0.3 TB/s on the H200: 1.8 ms a step for the Llama 3.2 1B's
output projection (128,256 x 2,048, `fp8_output`), ~2% of its step. This kernel moves square tiles
through on-chip memory, so both its reads and its writes are whole rows of a tile.
"""

from __future__ import annotations

import torch

from tuner.quantization.nf4_triton import interpreting

try:
    import triton
    import triton.language as tl
except ImportError:  # torch's copy serves instead
    triton = tl = None

TILE = 128  # bytes a side: 16 KiB of on-chip memory per program


def available(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: CUDA with Triton installed, or the CPU under Triton's
    interpreter (``TRITON_INTERPRET=1``, how the tests check it without a GPU)."""
    return triton is not None and (device.type == "cuda" or (device.type == "cpu" and interpreting()))


if triton is not None:

    @triton.jit
    def _transpose_bytes_kernel(src_ptr, dst_ptr, rows, cols, TILE: tl.constexpr):
        r = tl.program_id(0) * TILE + tl.arange(0, TILE)
        c = tl.program_id(1) * TILE + tl.arange(0, TILE)
        inside = (r[:, None] < rows) & (c[None, :] < cols)
        tile = tl.load(src_ptr + r[:, None].to(tl.int64) * cols + c[None, :], mask=inside)
        tl.store(dst_ptr + c[:, None].to(tl.int64) * rows + r[None, :], tl.trans(tile), mask=tl.trans(inside))


def transpose_bytes(t: torch.Tensor) -> torch.Tensor:
    """``t.t().contiguous()`` for a contiguous 2-D tensor of 1-byte elements (e4m3, uint8), on a device
    where `available`."""
    if t.dim() != 2 or t.element_size() != 1 or not t.is_contiguous():
        raise ValueError(f"transpose_bytes takes a contiguous 2-D tensor of 1-byte elements, got {t.dtype} {t.shape}")
    rows, cols = t.shape
    out = torch.empty(cols, rows, dtype=torch.uint8, device=t.device)
    if t.numel():
        grid = (triton.cdiv(rows, TILE), triton.cdiv(cols, TILE))
        _transpose_bytes_kernel[grid](t.view(torch.uint8), out, rows, cols, TILE=TILE, num_warps=4)
    return out.view(t.dtype)
