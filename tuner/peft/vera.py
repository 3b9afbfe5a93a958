"""VeRA: shared frozen random projections with per-layer trainable scaling vectors.

Follows HF PEFT's ``VeraModel``: one pair of frozen matrices ``vera_A [r, max_in]`` and
``vera_B [max_out, r]`` for the whole model, drawn with a CPU ``torch.Generator`` seeded with
``projection_prng_key`` (kaiming-uniform, ``A`` first), sized for the largest adapted layer and sliced
per layer; each layer trains ``vera_lambda_d [r]`` (initialised to ``d_initial``) and
``vera_lambda_b [out]`` (zeros):

    y = W x + b + lambda_b * (B[:out] @ (lambda_d * (A[:, :in] @ dropout(x))))

The projections live once on the model root as the module ``vera_projections`` (state-dict keys
``vera_projections.vera_A`` / ``.vera_B``); each layer keeps an unregistered reference to it, so the
matrices are stored, moved and saved once.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import TunerError
from tuner.peft.base import FrozenBase
from tuner.quantization import FP8Input

VERA_PROJECTIONS_NAME = "vera_projections"


def _kaiming_init(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """PEFT's ``_kaiming_init``: uniform(-b, b) with b = sqrt(3) * sqrt(2) / sqrt(fan_in)."""
    tensor = torch.empty(shape)
    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def vera_delta(
    vera_a: torch.Tensor, vera_b: torch.Tensor, lambda_d: torch.Tensor, lambda_b: torch.Tensor
) -> torch.Tensor:
    """VeRA's weight update ``(lambda_b * B[:out]) @ (lambda_d * A[:, :in])`` (A, B already sliced)."""
    dtype = lambda_d.dtype
    return (lambda_b.unsqueeze(-1) * vera_b.to(dtype)) @ (lambda_d.unsqueeze(-1) * vera_a.to(dtype))


class VeRAProjections(nn.Module):
    """The model-wide frozen VeRA matrices (buffers, saved with the adapter)."""

    def __init__(self, rank: int, max_in: int, max_out: int, projection_prng_key: int = 0) -> None:
        super().__init__()
        generator = torch.Generator(device="cpu").manual_seed(int(projection_prng_key))
        self.projection_prng_key = int(projection_prng_key)
        self.register_buffer("vera_A", _kaiming_init((rank, max_in), generator))
        self.register_buffer("vera_B", _kaiming_init((max_out, rank), generator))


class VeRALinear(FrozenBase):
    """A frozen linear base plus VeRA's scaled shared projections (see the module docstring).

    Args:
        in_dim, out_dim: the base layer's features.
        rank: VeRA rank ``r`` (rows of the shared ``A``).
        projections: the model's shared `VeRAProjections` (kept as an unregistered reference).
        dropout: dropout on the adapter input.
        d_initial: initial value of ``vera_lambda_d`` (PEFT default 0.1).
        quantize_base: store the frozen base in NF4.
        base_dtype: ``"fp8"`` stores the frozen base in FP8, or with ``quantize_base`` runs the NF4 base's
            GEMMs in FP8 (see `LoRALinear`).
        weight, bias: the base layer's tensors to wrap (no copy).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        rank: int,
        projections: VeRAProjections,
        dropout: float = 0.0,
        d_initial: float = 0.1,
        quantize_base: bool = False,
        weight: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        use_bias: bool = False,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        base_dtype: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise TunerError(
                f"VeRA rank must be a positive integer, got {rank!r}", fix="set lora_rank: 256 (VeRA uses large ranks)"
            )
        pa, pb = projections.vera_A, projections.vera_B
        if pa.shape[0] < rank or pa.shape[1] < in_dim or pb.shape[0] < out_dim:
            raise TunerError(
                f"VeRA projections of shapes {tuple(pa.shape)}/{tuple(pb.shape)} are too small for a "
                f"{in_dim}->{out_dim} layer of rank {rank}"
            )
        self.rank, self.d_initial = rank, d_initial
        self.disabled = False
        device, dtype = self._init_base(
            in_dim, out_dim, weight, bias, use_bias, quantize_base, device, dtype, base_dtype=base_dtype
        )
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.vera_lambda_b = nn.Parameter(torch.empty(out_dim, device=device, dtype=dtype))
        self.vera_lambda_d = nn.Parameter(torch.empty(rank, device=device, dtype=dtype))
        object.__setattr__(self, "_projections", projections)  # shared, not a submodule
        self.initialize_adapter()
        if self.stores_quantized_base():
            self._quantize()

    def frozen_adapter_param_names(self) -> set[str]:
        return set()

    def initialize_adapter(self) -> None:
        """PEFT's ``reset_vera_parameters``: ``lambda_d = d_initial``, ``lambda_b = 0``."""
        with torch.no_grad():
            self.vera_lambda_d.fill_(self.d_initial)
            self.vera_lambda_b.zero_()

    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._projections.vera_A[: self.rank, : self.in_dim]
        b = self._projections.vera_B[: self.out_dim, : self.rank]
        return a, b

    def delta_weight(self) -> torch.Tensor:
        """``(lambda_b B) @ (lambda_d A)``, PEFT's ``get_delta_weight``."""
        a, b = self._sliced()
        return vera_delta(a, b, self.vera_lambda_d, self.vera_lambda_b)

    def merged_weight(self) -> torch.Tensor:
        return self.base_weight().to(self.vera_lambda_d.dtype) + self.delta_weight()

    def forward(self, x: torch.Tensor, x_fp8: Optional[FP8Input] = None) -> torch.Tensor:
        """``x_fp8``: ``x`` already quantized for an FP8 base (`tuner.quantization.project_shared`)."""
        out = self.base_linear(x, x_fp8=x_fp8)
        if self.disabled:
            return out
        a, b = self._sliced()
        dtype = self.vera_lambda_d.dtype
        h = self.vera_lambda_d * F.linear(self.dropout(x).to(dtype), a.to(x.device, dtype))
        return (out + self.vera_lambda_b * F.linear(h, b.to(x.device, dtype))).to(out.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}"
            + (", nf4" if self.quantize_base else "")
            + (f", base_dtype={self.base_dtype}" if self.base_dtype else "")
        )
