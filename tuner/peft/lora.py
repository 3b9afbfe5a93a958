"""`LoRALinear`: a frozen linear layer plus a trainable low-rank update.

One class carries the LoRA variants that change only the layer's maths or initialisation, each a
constructor switch, and each following HF PEFT's implementation so that adapters move between the
two with the same outputs:

- plain LoRA: ``y = W x + b + s * B(A(dropout(x)))`` with ``s = alpha / r``;
- rsLoRA (``use_rslora``): ``s = alpha / sqrt(r)``;
- DoRA (``use_dora``): a trainable per-output ``magnitude`` rescales the (detached) row norm of
  ``W + s B A`` (PEFT's ``DoraLinearLayer``);
- LoRA-FA (``lora_fa``): ``A`` is frozen after initialisation, only ``B`` trains;
- PiSSA (``init_lora_weights="pissa"`` or ``"pissa_niter_<n>"``): ``A``/``B`` start from the top-r
  singular triplets of ``W`` and the frozen base becomes the residual ``W - s B0 A0``; ``A0``/``B0`` are
  kept as buffers so that the adapter can be exported as a plain LoRA over the original weights.

The frozen base stays on the module as ``weight`` / ``bias`` so the base state-dict keys do not change
(``...q_proj.weight``); the adapter keys are ``lora_a.weight``, ``lora_b.weight`` and ``magnitude``.
With ``quantize_base=True`` the base weight is stored in NF4 through `tuner.quantization`; with
``base_dtype="fp8"`` in FP8 (e4m3, per-row scales), its GEMMs in FP8 on Ada / Hopper GPUs; with both,
stored in NF4 and made FP8 per call for the same GEMMs. DoRA then normalises against the dequantized
base (NF4 or FP8: the stored weight).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from tuner.errors import ConfigError, TrainingError, TunerError
from tuner.peft.base import FrozenBase
from tuner.quantization import FP8Input

# torchao's NF4 options that torchtune's LoRALinear takes; tuner's NF4 (bitsandbytes) has them fixed.
NF4_BLOCK_SIZES = {"block_size": 64, "scaler_block_size": 256}

InitLoRAWeights = Union[bool, str]


def lora_scaling(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """LoRA's output scale: ``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """Plain LoRA's weight update ``s * B @ A``."""
    return scaling * (lora_b @ lora_a)


def dora_merged_weight(
    base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, magnitude: torch.Tensor
) -> torch.Tensor:
    """DoRA's merged weight, PEFT's ``merge``: ``(m / ||W + s B A||_row) * (W + s B A)``."""
    combined = base.to(lora_a.dtype) + lora_delta(lora_a, lora_b, scaling)
    return _dora_row_scale(combined, magnitude).view(-1, 1) * combined


def dora_row_scale(
    base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, magnitude: torch.Tensor
) -> torch.Tensor:
    """DoRA's per-output factor ``m / ||W + s B A||_row``: the layer computes ``factor * (W x + s B A x)``
    (plus the bias), so a fixed adapter over a fixed base is a plain LoRA whose output is rescaled."""
    return _dora_row_scale(base.to(lora_a.dtype) + lora_delta(lora_a, lora_b, scaling), magnitude)


def _dora_row_scale(combined: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    return magnitude / torch.linalg.norm(combined, dim=1).detach()


class LoRALinear(FrozenBase):
    """A frozen ``nn.Linear``-like base plus a trainable low-rank adapter (see the module docstring).

    Args:
        in_dim, out_dim: the base layer's input and output features.
        rank, alpha: LoRA rank ``r`` and ``alpha`` (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter's input.
        use_bias: whether the base has a bias (only used when ``bias`` is not given).
        use_dora: DoRA (adds the trainable ``magnitude`` vector).
        quantize_base: store the frozen base weight in NF4.
        use_rslora: rank-stabilised scaling ``alpha / sqrt(r)``.
        lora_fa: LoRA-FA, ``lora_a`` is frozen after initialisation.
        init_lora_weights: ``True`` (PEFT default: kaiming-uniform ``A``, zero ``B``), ``False`` (random
            ``B`` too, for tests), ``"gaussian"``, ``"pissa"`` or ``"pissa_niter_<n>"``.
        weight, bias: an existing base weight/bias to wrap (no copy), e.g. from the replaced
            ``nn.Linear``; created like ``nn.Linear``'s when not given.
        device, dtype: where and how to create new tensors (defaults: those of ``weight``).
        base_dtype: ``"fp8"``: store the frozen base in FP8 with per-row scales and run its forward and
            input-gradient GEMMs in FP8 (`tuner.quantization.linear_fp8`); with ``quantize_base`` the base
            stays stored in NF4 and each call dequantizes it and quantizes it per row for the same FP8
            GEMMs (`tuner.quantization.linear_nf4_fp8`); None keeps it in ``dtype`` (or NF4 computing in it).
        quantization_kwargs: torchtune's NF4 options ``block_size`` / ``scaler_block_size``; only
            with ``quantize_base``, and only at the values tuner's NF4 uses (64 / 256).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        use_bias: bool = False,
        use_dora: bool = False,
        quantize_base: bool = False,
        use_rslora: bool = False,
        lora_fa: bool = False,
        init_lora_weights: InitLoRAWeights = True,
        weight: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        base_dtype: Optional[str] = None,
        **quantization_kwargs: int,
    ) -> None:
        super().__init__()
        _check_quantization_kwargs(quantize_base, quantization_kwargs)
        if not isinstance(rank, int) or rank <= 0:
            raise TunerError(
                f"lora_rank must be a positive integer, got {rank!r}", fix="set lora_rank: 8 (or 16, 32, ...)"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise TunerError(f"lora_dropout must be in [0, 1), got {dropout!r}", fix="set lora_dropout: 0.05")
        _check_init(init_lora_weights)
        pissa = isinstance(init_lora_weights, str) and init_lora_weights.startswith("pissa")
        if base_dtype is not None and not quantize_base and pissa:  # an NF4 base keeps PiSSA's residual as QLoRA does
            raise ConfigError(
                f"init_lora_weights: {init_lora_weights} rewrites the base into a residual, which base_dtype: "
                f"{base_dtype} cannot merge back into the original weights",
                fix="drop model.base_dtype, or use the default init_lora_weights with it",
            )
        self.rank, self.alpha = rank, alpha
        self.use_rslora, self.use_dora, self.lora_fa = use_rslora, use_dora, lora_fa
        self.init_lora_weights = init_lora_weights
        self.scaling = lora_scaling(rank, alpha, use_rslora)
        self.disabled = False  # True: the adapter is skipped (base model output)
        device, dtype = self._init_base(
            in_dim, out_dim, weight, bias, use_bias, quantize_base, device, dtype, base_dtype=base_dtype
        )

        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_a = nn.Linear(in_dim, rank, bias=False, device=device, dtype=dtype)
        self.lora_b = nn.Linear(rank, out_dim, bias=False, device=device, dtype=dtype)
        self.magnitude = nn.Parameter(torch.empty(out_dim, device=device, dtype=dtype)) if use_dora else None
        if self._is_pissa():
            self.register_buffer("pissa_init_a", torch.zeros(rank, in_dim, device=device, dtype=dtype))
            self.register_buffer("pissa_init_b", torch.zeros(out_dim, rank, device=device, dtype=dtype))
        real = self.weight.device.type != "meta"
        if self._is_pissa() and real:
            # PiSSA factors the dense weight; the residual is then quantized (PEFT's advice for QLoRA).
            self.initialize_adapter()
            if self.stores_quantized_base():
                self._quantize()
                if use_dora:  # DoRA's norm is of the weight the forward uses: the dequantized one
                    self.initialize_dora_magnitude()
        else:
            if self.stores_quantized_base():
                self._quantize()
            if real:
                self.initialize_adapter()
        if lora_fa:
            self.lora_a.weight.requires_grad_(False)

    # ----------------------------------------------------------------------------- initialisation
    def _is_pissa(self) -> bool:
        return isinstance(self.init_lora_weights, str) and self.init_lora_weights.startswith("pissa")

    def frozen_adapter_param_names(self) -> set[str]:
        """Adapter parameters of this module that stay frozen in training (LoRA-FA's ``A``)."""
        return {"lora_a.weight"} if self.lora_fa else set()

    def initialize_adapter(self) -> None:
        """Initialise ``A``/``B`` (and PiSSA's residual, DoRA's magnitude) from the current base weight.

        Called by the constructor unless the module lives on the meta device; a model built on meta
        must call this (through `tuner.peft.initialize_adapters`) once the base weights are loaded.
        PiSSA rewrites the base weight into its residual, so run it on the original base weight only.
        """
        with torch.no_grad():
            if self._is_pissa():
                self._pissa_init()
            elif self.init_lora_weights is True:
                nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
                nn.init.zeros_(self.lora_b.weight)
            elif isinstance(self.init_lora_weights, str) and self.init_lora_weights.lower() == "gaussian":
                nn.init.normal_(self.lora_a.weight, std=1 / self.rank)
                nn.init.zeros_(self.lora_b.weight)
            else:  # False: random B as well (non-identity start; tests)
                nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
                nn.init.kaiming_uniform_(self.lora_b.weight, a=math.sqrt(5))
            if self.use_dora:
                self.initialize_dora_magnitude()

    def _pissa_init(self) -> None:
        """PEFT's ``pissa_init``: SVD of the base; ``A = sqrt(S) U^T``, ``B = V sqrt(S)`` (each scaled by 1/s)."""
        if self.base_is_quantized():
            raise TunerError(
                "PiSSA initialisation needs the unquantized base weight",
                fix="build the model with real base weights (not on meta) when combining PiSSA with quantize_base",
            )
        weight = self.weight.to(torch.float32)
        r, s = self.rank, self.scaling
        if self.init_lora_weights == "pissa":
            v, sv, uh = torch.linalg.svd(weight, full_matrices=False)
            vr, sr, uhr = v[:, :r], sv[:r] / s, uh[:r]
        else:
            parts = self.init_lora_weights.split("_niter_")
            vr, sr, ur = torch.svd_lowrank(weight, r, niter=int(parts[-1]))
            sr, uhr = sr / s, ur.t()
        lora_a = torch.diag(torch.sqrt(sr)) @ uhr
        lora_b = vr @ torch.diag(torch.sqrt(sr))
        dtype = self.lora_a.weight.dtype
        self.lora_a.weight.copy_(lora_a.to(dtype))
        self.lora_b.weight.copy_(lora_b.to(dtype))
        self.pissa_init_a.copy_(lora_a.to(dtype))
        self.pissa_init_b.copy_(lora_b.to(dtype))
        self.weight.data = (weight - s * lora_b @ lora_a).to(self.weight.dtype)

    def initialize_dora_magnitude(self) -> None:
        """DoRA's magnitude: the row norm of ``W + s B A`` (PEFT's ``DoraLinearLayer.update_layer``)."""
        if any(t.is_meta for t in (self.lora_a.weight, self.lora_b.weight, self.magnitude)) or (
            not self.base_is_quantized() and self.weight.is_meta
        ):
            raise TrainingError(
                "Cannot initialize DoRA magnitude if base or LoRA parameters are still on meta device",
                fix="load the base weights first, then call tuner.peft.initialize_adapters(model)",
            )
        with torch.no_grad():
            self.magnitude.copy_(self._weight_norm(self._lora_weight()))

    # ----------------------------------------------------------------------------- maths
    def _lora_weight(self) -> torch.Tensor:
        return self.lora_b.weight @ self.lora_a.weight

    def _weight_norm(self, lora_weight: torch.Tensor) -> torch.Tensor:
        weight = self.base_weight().to(lora_weight.dtype) + self.scaling * lora_weight
        return torch.linalg.norm(weight, dim=1).to(weight.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The merged weight minus the base weight (what merging adds), in the adapter dtype."""
        return self.merged_weight() - self.base_weight().to(self.lora_a.weight.dtype)

    def merged_weight(self) -> torch.Tensor:
        """``W + s B A`` in the adapter dtype (PEFT's merge; DoRA also scales rows by magnitude/norm)."""
        a, b = self.lora_a.weight, self.lora_b.weight
        base = self.base_weight().to(a.dtype)
        if self.use_dora:
            return dora_merged_weight(base, a, b, self.scaling, self.magnitude)
        return base + lora_delta(a, b, self.scaling)

    def forward(self, x: torch.Tensor, x_fp8: Optional[FP8Input] = None) -> torch.Tensor:
        """``x_fp8``: ``x`` already quantized for an FP8 base (`tuner.quantization.project_shared`)."""
        out = self.base_linear(x, x_fp8=x_fp8)
        if self.disabled:
            return out
        xd = self.dropout(x)
        # Scaled on the rank-r side: scaling the [tokens, out] product instead makes backward write
        # a scaled copy of the output gradient for every adapted layer (a full extra pass).
        lora_out = self.lora_b(self.lora_a(xd) * self.scaling)
        if not self.use_dora:
            return out + lora_out
        # PEFT's DoRA forward: the norm of W + s*BA is detached (DoRA paper, section 4.3).
        lora_weight = self._lora_weight().detach()
        norm = self._weight_norm(lora_weight).detach()
        mag_norm_scale = (self.magnitude / norm).view(1, -1)
        if isinstance(self.dropout, nn.Identity) or not self.training:
            base_no_bias = out if self.bias is None else out - self.bias
        else:
            base_no_bias = self.base_linear(xd, with_bias=False)
        return out + (mag_norm_scale - 1) * base_no_bias + mag_norm_scale * lora_out

    def extra_repr(self) -> str:
        variant = [
            n
            for n, on in (
                ("dora", self.use_dora),
                ("rslora", self.use_rslora),
                ("lora_fa", self.lora_fa),
                ("nf4", self.quantize_base),
                (str(self.base_dtype), self.base_dtype is not None),
            )
            if on
        ]
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}, alpha={self.alpha}, "
            f"init={self.init_lora_weights!r}" + (f", {', '.join(variant)}" if variant else "")
        )


class DoRALinear(LoRALinear):
    """torchtune's ``DoRALinear``: `LoRALinear` with ``use_dora=True`` (a trainable ``magnitude``)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        use_bias: bool = False,
        quantize_base: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(
            in_dim,
            out_dim,
            rank,
            alpha,
            dropout=dropout,
            use_bias=use_bias,
            use_dora=True,
            quantize_base=quantize_base,
            **kwargs,
        )


def _check_quantization_kwargs(quantize_base: bool, kwargs: dict) -> None:
    if kwargs and not quantize_base:
        raise ConfigError(
            f"``quantize_base`` is False, but received the following quantization arguments: {kwargs}",
            "set quantize_base=True or drop those arguments",
        )
    unknown = sorted(set(kwargs) - set(NF4_BLOCK_SIZES))
    if unknown:
        raise ConfigError(f"LoRALinear got unknown argument(s) {unknown}", f"NF4 options are {sorted(NF4_BLOCK_SIZES)}")
    other = {k: v for k, v in kwargs.items() if v != NF4_BLOCK_SIZES[k]}
    if other:
        raise ConfigError(
            f"tuner's NF4 (bitsandbytes) uses block_size=64 and scaler_block_size=256, got {other}",
            "drop block_size / scaler_block_size",
        )


def _check_init(init: InitLoRAWeights) -> None:
    if isinstance(init, bool):
        return
    if isinstance(init, str):
        if init.lower() == "gaussian" or init == "pissa":
            return
        parts = init.split("_niter_")
        if len(parts) == 2 and parts[0] == "pissa" and parts[1].isdigit():
            return
    raise TunerError(
        f"unknown init_lora_weights {init!r}",
        fix="use true (default), false, 'gaussian', 'pissa' or 'pissa_niter_<n>' (e.g. pissa_niter_4)",
    )
