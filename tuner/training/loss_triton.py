"""One chunk of the FP8 output loss (``fp8_output``) as one Triton kernel: losses and e4m3 gradient.

With LoRA's ``fp8_output`` each chunk of rows of the frozen-projection loss needs, from its bf16
logits ``z`` [rows, vocab]: each row's cross-entropy, and the logits' gradient ``softmax(z) - onehot``
with the weight's row scales ``s`` folded into its columns, quantized per row to e4m3 for the FP8
input-gradient GEMM (`fp8.quantize_output_grad`). Done with tensor ops, that is three reads of the
logits (log-sum-exp, the gradient's row maximum, the quantized write): on the Llama 3.2 1B's
128,256-word vocabulary ~0.57 ms per 1,024-row chunk, ~5% of its FP8 step.

The gradient's row maximum needs no pass of its own. Off the target the gradient is
``p_j s_j = exp(z_j + ln s_j - lse) > 0``, so its largest magnitude there is
``exp(max_{j != y}(z_j + ln s_j) - lse)``, a maximum taken in the same pass as the log-sum-exp; at the
target it is ``(1 - p_y) s_y``. So the kernel reads each row twice: once for the log-sum-exp and that
maximum, once to write the quantized gradient. The gradient is quantized from float32 (the tensor-op
path rounds it to bf16 first), so the two agree to e4m3's rounding, not bit for bit.
"""

from __future__ import annotations

import torch

from tuner.quantization.fp8 import FP8Input
from tuner.quantization.nf4_triton import e4m3_codes, e4m3_row_scales, interpreting

try:
    import triton
    import triton.language as tl
except ImportError:  # the tensor-op path serves instead
    triton = tl = None

# the fastest of 18 settings on the 1B's chunk (H200, `scripts/bench_nf4.py loss`: 0.31 ms; the settings
# around it 0.33-0.35 ms, machine to machine as much again)
ROWS = 1  # rows a program
BLOCK = 1024  # logits per step of a row's loops
NUM_WARPS = 8


def _load_logits(ptrs, mask, BF16_BITS: tl.constexpr):
    """Logits at ``ptrs`` in float32 (0 where not ``mask``); bf16 is read as its bits (the interpreter's
    numpy has no bfloat16) and widened exactly by a shift."""
    if BF16_BITS:
        bits = tl.load(ptrs, mask=mask, other=0).to(tl.int32)
        return (bits << 16).to(tl.float32, bitcast=True)
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


def _ce_grad_fp8_kernel(
    logits_ptr,
    targets_ptr,
    scale_ptr,
    log_scale_ptr,
    loss_ptr,
    grad_ptr,
    grad_scale_ptr,
    n_rows,
    vocab,
    ignore_index,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    BF16_BITS: tl.constexpr,
    NATIVE: tl.constexpr,
):
    # ROWS rows a program, so that each block of the weight's scales is read once for all of them
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    first = rows.to(tl.int64)[:, None] * vocab
    target = tl.load(targets_ptr + rows, mask=row_ok, other=ignore_index)
    valid = target != ignore_index
    target = tl.where(valid, target, 0)
    # per-lane running maximum, sum of exponentials and off-target maximum, reduced across lanes once
    # after the loop (no cross-thread reduction per block)
    running_max = tl.full([ROWS, BLOCK], float("-inf"), tl.float32)
    running_sum = tl.zeros([ROWS, BLOCK], tl.float32)
    off_target = tl.full([ROWS, BLOCK], float("-inf"), tl.float32)  # max over j != target of z_j + ln s_j
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        in_vocab = cols < vocab
        z = _load_logits(logits_ptr + first + cols[None, :], row_ok[:, None] & in_vocab[None, :], BF16_BITS)
        z = tl.where(in_vocab[None, :], z, float("-inf"))
        new_max = tl.maximum(running_max, z)
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # a lane past the vocabulary so far
        running_sum = running_sum * tl.exp(running_max - shift) + tl.exp(z - shift)
        running_max = new_max
        log_scale = tl.load(log_scale_ptr + cols, mask=in_vocab, other=0.0)
        shifted = tl.where(cols[None, :] != target[:, None], z + log_scale[None, :], float("-inf"))
        off_target = tl.maximum(off_target, shifted)
    row_max = tl.max(running_max, 1)
    lse = row_max + tl.log(tl.sum(running_sum * tl.exp(running_max - row_max[:, None]), 1))
    off_target = tl.max(off_target, 1)
    target_logit = _load_logits(logits_ptr + first.reshape([ROWS]) + target, row_ok, BF16_BITS)
    target_scale = tl.load(scale_ptr + target)
    amax = tl.maximum(tl.exp(off_target - lse), (1.0 - tl.exp(target_logit - lse)) * target_scale)
    amax = tl.where(valid, amax, 0.0)
    to_fp8, grad_scale = e4m3_row_scales(amax)
    tl.store(grad_scale_ptr + rows, grad_scale, mask=row_ok)
    tl.store(loss_ptr + rows, tl.where(valid, lse - target_logit, 0.0), mask=row_ok)
    to_fp8 = tl.where(valid, to_fp8, 0.0)[:, None]
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        in_vocab = cols < vocab
        inside = row_ok[:, None] & in_vocab[None, :]
        z = _load_logits(logits_ptr + first + cols[None, :], inside, BF16_BITS)
        grad = tl.exp(z - lse[:, None]) - tl.where(cols[None, :] == target[:, None], 1.0, 0.0)
        scaled = grad * tl.load(scale_ptr + cols, mask=in_vocab, other=0.0)[None, :] * to_fp8
        tl.store(grad_ptr + first + cols[None, :], e4m3_codes(scaled, NATIVE), mask=inside)


if triton is not None:
    _load_logits = triton.jit(_load_logits)
    _ce_grad_fp8_kernel = triton.jit(_ce_grad_fp8_kernel)


def ce_grad_fp8(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    weight_scale: torch.Tensor,
    log_weight_scale: torch.Tensor,
) -> tuple[torch.Tensor, FP8Input]:
    """``(each row's loss, the logits' gradient as `fp8.quantize_output_grad` makes it)`` for one chunk:
    ``logits`` [rows, vocab] (bf16, fp16 or float32, contiguous), ``targets`` [rows] (``ignore_index``
    rows score 0 and get a zero gradient), ``weight_scale`` [vocab] the FP8 output weight's row scales
    and ``log_weight_scale`` their logarithms (made once for all chunks). Runs where
    `fp8_triton.available`."""
    rows, vocab = logits.shape
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    grad = torch.empty(rows, vocab, dtype=torch.uint8, device=logits.device)
    grad_scale = torch.empty(rows, 1, dtype=torch.float32, device=logits.device)
    if rows:
        bf16 = logits.dtype == torch.bfloat16
        _ce_grad_fp8_kernel[(triton.cdiv(rows, ROWS),)](
            logits.contiguous().view(torch.int16) if bf16 else logits.contiguous(),
            targets.contiguous(),
            weight_scale.contiguous(),
            log_weight_scale.contiguous(),
            losses,
            grad,
            grad_scale,
            rows,
            vocab,
            ignore_index,
            ROWS=ROWS,
            BLOCK=BLOCK,
            BF16_BITS=bf16,
            NATIVE=not interpreting(),
            num_warps=NUM_WARPS,
        )
    return losses, FP8Input(grad.view(torch.float8_e4m3fn), grad_scale)
