"""Weights that both NF4 formats hold exactly (``scripts/benchmark.py --nf4-exact-weights``, issue #26).

tuner quantizes NF4 as bitsandbytes does, torchtune as torchao 0.11 does: the same 64-value blocks,
each scaled by its absmax, but the absmaxes are quantized again differently (bitsandbytes: their mean
subtracted, then its signed 8-bit *dynamic* code in blocks of 256; torchao: their mean subtracted,
then linear int8, ``round(x * 128 / blockmax)`` clamped to [-128, 127]), and torchao's 16 levels are
bitsandbytes' rounded to 4 decimals (-0.6962 for -0.69619...). So one random bf16 weight becomes two
different dense weights, and a loss comparison of the two tools measures the formats, not the kernels.

What both hold exactly (checked on CPU in float32 and bf16: ``scripts/nf4_exact_check.py``,
``tests/bench/test_nf4_exact.py``, docs/benchmarks.md):

- levels: only -1, 0 and +1 are the same in both tables;
- absmaxes: one value per weight tensor. With two or more, the centred absmaxes are +-d for some
  d > 0 in some 256-block whose largest magnitude is then d; bitsandbytes' code has +1.0 but no
  -1.0 (its most negative entry is -0.99297), torchao maps +d to 127/128 d: whichever sign the
  largest magnitude has, one library rounds it. With one value the centred absmaxes are all 0, both
  libraries dequantize each to the mean, which is that value exactly (bitsandbytes stores a block
  maximum of 0, so whatever code 0/0 picked is multiplied by 0; torchao's int8 of 0 x inf is divided
  by the infinite factor again).

So every such weight is ``SCALE x {-1, 0, +1}``: +-1 with probability ``NONZERO`` (random signs),
else 0, and the first entry of every 64-block +-1, so that each block's absmax is exactly ``SCALE``.
``SCALE`` is a power of two (exact in bf16 and float32); the standard deviation is
``SCALE * sqrt(NONZERO)`` = 0.0198, close to the 0.02 of the usual random init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tuner.quantization.nf4 import BLOCKSIZE

SCALE = 2.0**-5  # every 64-block's absmax
NONZERO = 0.4  # share of entries at +-SCALE: std = SCALE * sqrt(NONZERO) = 0.0198


def nf4_exact_weight(
    shape: Sequence[int], generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """A float32 weight of ``shape`` (on ``device``) whose NF4 form, bitsandbytes' and torchao's,
    dequantizes to itself exactly: ``SCALE x {-1, 0, +1}`` with at least one +-1 in every block of
    64 consecutive entries (row-major), as both libraries block it."""
    numel = math.prod(shape)
    signs = torch.where(torch.rand(numel, generator=generator, device=device) < 0.5, -1.0, 1.0)
    nonzero = torch.rand(numel, generator=generator, device=device) < NONZERO
    levels = torch.where(nonzero, signs, torch.zeros_like(signs))
    levels[::BLOCKSIZE] = signs[::BLOCKSIZE]  # each block's absmax is SCALE exactly
    return (levels * SCALE).view(*shape)


def is_block_linear(key: str, shape: Sequence[int]) -> bool:
    """Whether ``key`` (a tuner state-dict key) is a matrix inside a decoder layer: the linears that
    QLoRA quantizes, on either side (tuner: those with an adapter; torchtune 0.6.1: every linear of
    the layer, ``k_proj`` too). Embeddings, norms and the output projection stay dense in both."""
    return key.startswith("layers.") and len(shape) == 2


def nf4_differences(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> dict[str, int | float]:
    """How far ``model``'s NF4 weights, dequantized as its forward does, are from the ``reference``
    state dict (tuner keys; the checkpoint it loaded): the number of NF4 weights, of their entries
    that differ, and the largest absolute difference. On `nf4_exact_weight`s both are 0 (measured on
    CPU; bitsandbytes' CUDA quantization and tuner's Triton kernel are checked by the GPU runs that
    report it): the benchmark gives it next to the losses, so that a tuner NF4 path that rounds them
    shows there, not as a loss difference."""
    from tuner.checkpoint.keys import clean_tuner_key
    from tuner.quantization import dequantize_nf4, get_nf4_weight, has_nf4_weight

    weights, differing, largest = 0, 0, 0.0
    for name, module in model.named_modules():
        if not has_nf4_weight(module):
            continue
        dense = dequantize_nf4(get_nf4_weight(module))
        diff = (dense.float() - reference[clean_tuner_key(name) + ".weight"].to(dense.device).float()).abs()
        weights, differing, largest = weights + 1, differing + int((diff > 0).sum()), max(largest, float(diff.max()))
    return {"nf4_weights": weights, "entries_differing": differing, "max_abs_diff": largest}
