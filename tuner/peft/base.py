"""The frozen base weight shared by the adapter layers: dense, or NF4 through `tuner.quantization`.

A dense base is the module's ``weight`` (and ``bias``) parameter, frozen, so a base checkpoint's keys
(``...q_proj.weight``) load as they are. With ``quantize_base=True`` the weight is stored by
`tuner.quantization.register_nf4_weight` (state-dict keys ``weight_nf4``, ``weight_absmax``, ...; a
dense ``weight`` loaded into the module is quantized on the fly), which is QLoRA. With
``base_dtype="fp8"`` it is stored in FP8 with per-row scales (`tuner.quantization.register_fp8_weight`,
keys ``weight_fp8``, ``weight_fp8_scale``) and both GEMMs of the base run in FP8 on Ada / Hopper GPUs.
With both, the base stays stored in NF4 (the same keys and bytes as QLoRA) and only its GEMMs run in
FP8: each call dequantizes it and quantizes it per row to e4m3 (`tuner.quantization.compute_nf4_in_fp8`).
"""

from __future__ import annotations

import math
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

import tuner.quantization as quant
from tuner.errors import TunerError


class AdapterModule(Protocol):
    """A module with adapter parameters (torchtune's protocol): ``adapter_params()`` names them,
    relative to the module. `tuner.peft.get_adapter_params` collects them from every such module."""

    def adapter_params(self) -> list[str]: ...


class FrozenBase(nn.Module):
    """Holds a frozen linear base and computes with it; subclasses add the adapter (an `AdapterModule`:
    every parameter but ``weight`` and ``bias`` is an adapter parameter)."""

    def adapter_params(self) -> list[str]:
        return [name for name, _ in self.named_parameters() if name not in ("weight", "bias")]

    in_dim: int
    out_dim: int
    quantize_base: bool
    base_dtype: Optional[str] = None

    def _init_base(
        self,
        in_dim: int,
        out_dim: int,
        weight: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        use_bias: bool,
        quantize_base: bool,
        device: Optional[torch.device],
        dtype: Optional[torch.dtype],
        base_dtype: Optional[str] = None,
    ) -> tuple[torch.device, torch.dtype]:
        """Store the base (wrapping ``weight``/``bias`` without copying); return the adapters' device/dtype."""
        self.base_dtype = quant.check_base_dtype(base_dtype, quantize_base)
        if weight is None:
            weight = torch.empty(out_dim, in_dim, device=device, dtype=dtype)
            if weight.device.type != "meta":
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            if use_bias and bias is None:
                bias = torch.zeros(out_dim, device=device, dtype=dtype)
        if tuple(weight.shape) != (out_dim, in_dim):
            raise TunerError(
                f"{type(self).__name__} base weight has shape {tuple(weight.shape)}, expected {(out_dim, in_dim)}"
            )
        device = weight.device if device is None else torch.device(device)
        dtype = weight.dtype if dtype is None else dtype
        self.in_dim, self.out_dim, self.quantize_base = in_dim, out_dim, quantize_base
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        return device, dtype

    def stores_quantized_base(self) -> bool:
        """Whether the base is meant to be stored quantized (NF4 or FP8), loaded or not."""
        return self.quantize_base or self.base_dtype is not None

    def _quantize(self) -> None:
        """Move the dense ``weight`` into NF4 or FP8 storage (empty meta buffers when still on meta);
        NF4 (``quantize_base``) wins, and with ``base_dtype`` too its GEMMs run in FP8."""
        dense = self.weight.data
        del self.weight
        if self.base_dtype is not None and not self.quantize_base:  # FP8 storage (quant.BASE_DTYPES)
            quant.register_fp8_weight(
                self,
                (self.out_dim, self.in_dim),
                compute_dtype=dense.dtype,
                device=dense.device,
                fp8_input_grad=quant.fp8_input_grad(self.base_dtype),
            )
            fill = quant.set_fp8_weight
        else:
            quant.register_nf4_weight(self, self.out_dim, self.in_dim, compute_dtype=dense.dtype, device=dense.device)
            if self.base_dtype is not None:  # QLoRA computing in FP8: NF4 storage, FP8 GEMMs
                quant.compute_nf4_in_fp8(self, quant.fp8_input_grad(self.base_dtype))
            fill = quant.set_nf4_weight
        if dense.device.type != "meta":
            fill(self, dense)

    def base_is_quantized(self) -> bool:
        return (self.quantize_base and quant.has_nf4_weight(self)) or quant.has_fp8_weight(self)

    def base_storage(self) -> torch.Tensor:
        """The tensor that holds the base weight (its device is the base's)."""
        if quant.has_fp8_weight(self):
            return self.weight_fp8
        return self._buffers["weight_nf4"] if self.base_is_quantized() else self.weight

    def base_weight(self) -> torch.Tensor:
        """The base weight as a dense tensor (dequantized when stored in NF4 or FP8)."""
        if quant.has_fp8_weight(self):
            return quant.dequantize_fp8(quant.get_fp8_weight(self))
        if self.base_is_quantized():
            return quant.dequantize_nf4(quant.get_nf4_weight(self))
        return self.weight

    def base_linear(
        self, x: torch.Tensor, with_bias: bool = True, x_fp8: Optional[quant.FP8Input] = None
    ) -> torch.Tensor:
        """``x @ W^T (+ b)`` with the frozen base; ``x_fp8``: ``x`` already quantized for an FP8 base
        (`tuner.quantization.shared_fp8_input`), also taken by an NF4 base computing in FP8, ignored by
        the other bases."""
        bias = self.bias if with_bias else None
        if quant.has_fp8_weight(self):
            return quant.fp8_linear(self, x, bias, x_fp8)
        if self.base_is_quantized():
            return quant.nf4_linear(self, x, bias, x_fp8)
        return F.linear(x, self.weight, bias)

    def base_numel(self) -> int:
        """Number of base weight entries (the logical count for NF4)."""
        return self.out_dim * self.in_dim
