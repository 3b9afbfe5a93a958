"""A module's frozen weight stored in FP8 (`tuner.quantization.fp8`), in two buffers:

    <prefix>weight_fp8        uint8 [out, in]   the float8_e4m3fn bits, one byte per value
    <prefix>weight_fp8_scale  int32 [out]       float32 bits: each row's dequantization scale

Both are kept as integer bit patterns (as the NF4 buffers are) so that ``model.to(torch.bfloat16)``,
which casts every floating buffer (float8 included), cannot change them. Loading a dense
``<prefix>weight`` (a base checkpoint) into such a module quantizes it on the fly (a load_state_dict
pre-hook), which fills a meta-built model one tensor at a time as QLoRA's NF4 base is filled.
FSDP2 does not shard buffers: like NF4, every rank holds the whole FP8 base (1 byte per parameter).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import nn

from tuner.errors import ConfigError, TunerError, did_you_mean
from tuner.quantization.fp8 import FP8_DTYPE, FP8Weight, check_fp8_device, linear_fp8, quantize_fp8

FP8_BUFFERS = ("weight_fp8", "weight_fp8_scale")
_SPEC = "_fp8_spec"  # module attribute: (shape, compute dtype, FP8 input gradient) of its FP8 weight


def has_fp8_weight(module: nn.Module) -> bool:
    """Whether `module` holds a weight registered by `register_fp8_weight`."""
    return hasattr(module, _SPEC)


def fp8_spec(module: nn.Module) -> tuple[torch.Size, torch.dtype, bool]:
    """(shape [out, in], compute dtype, whether the input gradient's GEMM is FP8) of `module`'s FP8 weight."""
    spec = getattr(module, _SPEC, None)
    if spec is None:
        raise TunerError(f"{type(module).__name__} has no FP8 weight; call register_fp8_weight first")
    return spec


def register_fp8_weight(
    module: nn.Module,
    shape: tuple[int, int],
    *,
    compute_dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str | None = None,
    fp8_input_grad: bool = True,
) -> None:
    """Give `module` an (empty) frozen FP8 weight of `shape` [out_features, in_features], filled by
    `set_fp8_weight` or by loading a dense ``weight`` into it; it dequantizes to `compute_dtype`;
    `fp8_input_grad`: the input gradient's GEMM in FP8 too (else in `compute_dtype`)."""
    out_features, in_features = shape
    held = "an FP8 weight" if has_fp8_weight(module) else None
    if "weight" in module._parameters or "weight" in module._buffers:
        held = "a dense `weight`"
    if held:
        raise TunerError(f"{type(module).__name__} already has {held}", fix="register one FP8 weight per module")
    module.register_buffer("weight_fp8", torch.zeros(out_features, in_features, dtype=torch.uint8, device=device))
    module.register_buffer("weight_fp8_scale", torch.zeros(out_features, dtype=torch.int32, device=device))
    setattr(module, _SPEC, (torch.Size((out_features, in_features)), compute_dtype, fp8_input_grad))
    module.register_load_state_dict_pre_hook(_quantize_dense_weight_on_load)


def _quantize_for(module: nn.Module, weight: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two buffers for dense `weight`, on `module`'s device (or `weight`'s when the module is on meta)."""
    shape, dtype, _ = getattr(module, _SPEC)
    if tuple(weight.shape) != tuple(shape):
        raise TunerError(
            f"{name}: shape {list(weight.shape)} does not fit the model's FP8 weight {list(shape)}",
            fix="check that the model config matches the checkpoint",
        )
    if weight.is_meta:
        return tuple(torch.empty_like(getattr(module, n), device="meta") for n in FP8_BUFFERS)
    target = module.weight_fp8.device
    weight = weight if target.type == "meta" else weight.to(target)
    check_fp8_device(weight.device, tuple(shape))
    q = quantize_fp8(weight, dtype)
    return q.data.view(torch.uint8), q.scale.view(torch.int32)


def _quantize_dense_weight_on_load(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: a dense `<prefix>weight` becomes the FP8 buffers' entries."""
    key = prefix + "weight"
    if key in state_dict:
        for name, tensor in zip(FP8_BUFFERS, _quantize_for(module, state_dict.pop(key), key)):
            state_dict[prefix + name] = tensor


def set_fp8_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Quantize dense `weight` into `module`'s FP8 buffers (replacing them)."""
    for name, tensor in zip(FP8_BUFFERS, _quantize_for(module, weight, "weight")):
        setattr(module, name, tensor)


def get_fp8_weight(module: nn.Module) -> FP8Weight:
    """The `FP8Weight` view of `module`'s buffers (no copies)."""
    shape, dtype, fp8_input_grad = fp8_spec(module)
    if module.weight_fp8.is_meta:
        raise TunerError(
            f"the FP8 weight of {type(module).__name__} is still on the meta device (never loaded)",
            fix="load the checkpoint with load_state_dict(sd, strict=False, assign=True) or quantize_state_dict_into",
        )
    if not torch.compiler.is_compiling():
        check_fp8_device(module.weight_fp8.device, tuple(shape))  # e.g. after .to() onto a GPU without FP8
    data, scale = module.weight_fp8.view(FP8_DTYPE), module.weight_fp8_scale.view(torch.float32)
    return FP8Weight(data, scale, dtype, fp8_input_grad)


def fp8_linear(module: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W^T (+ bias)`` with `module`'s FP8 weight."""
    return linear_fp8(x, get_fp8_weight(module), bias)


class FP8Linear(nn.Module):
    """A frozen linear layer whose weight is stored in FP8 (`register_fp8_weight`); drop-in for a
    frozen `nn.Linear` that LoRA does not adapt (e.g. ``k_proj`` when only q/v are adapted), so that
    ``base_dtype: fp8`` runs every frozen block linear's GEMMs in FP8. Same keys as an adapted
    layer's FP8 base (``weight_fp8``, ``weight_fp8_scale``, ``bias``); a dense ``weight`` loads
    through the quantizing load hook."""

    def __init__(self, linear: nn.Linear, fp8_input_grad: bool = True) -> None:
        """Quantize `linear`'s weight (on its device, computing in its dtype); a meta `linear` gives an
        empty meta module that a checkpoint's dense ``weight`` fills as it loads."""
        super().__init__()
        w, b = linear.weight, linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        shape = (self.out_features, self.in_features)
        register_fp8_weight(self, shape, compute_dtype=w.dtype, device=w.device, fp8_input_grad=fp8_input_grad)
        self.bias = None if b is None else nn.Parameter(b.detach().clone(), requires_grad=False)
        if not w.is_meta:
            set_fp8_weight(self, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(self, x, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp8"


#: Values of the LoRA builders' ``base_dtype`` option (None: the base stays in the model's dtype);
#: an annotation, so that `tune validate` checks a config's value before anything is built.
#: ``fp8_all``: forward and input-gradient GEMMs in FP8; ``fp8_fwd``: forward in FP8, input gradient
#: in bf16 (the output gradient is not rounded to e4m3); ``fp8``: the default of the two (`FP8_DEFAULT`).
BaseDtype = Literal["fp8", "fp8_fwd", "fp8_all"]
BASE_DTYPES: tuple[str, ...] = get_args(BaseDtype)
FP8_DEFAULT = "fp8_all"  # what ``fp8`` means: the measured trade-off (docs/benchmarks.md, issue #27)


def fp8_input_grad(base_dtype: str) -> bool:
    """Whether `base_dtype` (one of `BASE_DTYPES`) runs the input gradient's GEMM in FP8."""
    return (FP8_DEFAULT if base_dtype == "fp8" else base_dtype) == "fp8_all"


def check_base_dtype(base_dtype: str | None, quantize_base: bool = False) -> str | None:
    """Return `base_dtype` (None or one of `BASE_DTYPES`); a ConfigError names a bad value or a clash
    with ``quantize_base`` (NF4), since a base is stored in one format."""
    if base_dtype is None:
        return None
    if base_dtype not in BASE_DTYPES:
        raise ConfigError(
            f"unknown base_dtype {base_dtype!r}{did_you_mean(str(base_dtype), BASE_DTYPES)}",
            fix=f"set model.base_dtype to one of {list(BASE_DTYPES)}, or drop it for a base in the model's dtype",
        )
    if quantize_base:
        raise ConfigError(
            f"base_dtype: {base_dtype} and quantize_base: True both choose how the base is stored",
            fix="use a lora_* builder with base_dtype: fp8, or a qlora_* builder (NF4) without base_dtype",
        )
    return base_dtype
