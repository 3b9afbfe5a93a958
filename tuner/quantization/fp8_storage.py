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
from tuner.quantization.fp8 import (
    FP8_DTYPE,
    FP8Input,
    FP8Weight,
    check_fp8_device,
    linear_fp8,
    quantize_fp8,
    quantize_input,
)
from tuner.quantization.linear import nf4_computes_in_fp8

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


def fp8_linear(
    module: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None, x_fp8: FP8Input | None = None
) -> torch.Tensor:
    """``x @ W^T (+ bias)`` with `module`'s FP8 weight; ``x_fp8``: ``x`` already quantized (`shared_fp8_input`)."""
    return linear_fp8(x, get_fp8_weight(module), bias, x_fp8)


SHARE_INPUT = "share_fp8_input"  # module attribute, default True: the module takes a shared quantized input


def computes_in_fp8(module: nn.Module) -> bool:
    """Whether `module`'s frozen weight runs FP8 GEMMs: stored in FP8 (`register_fp8_weight`), or stored
    in NF4 and made FP8 per call (`tuner.quantization.compute_nf4_in_fp8`, QLoRA with ``base_dtype``)."""
    return has_fp8_weight(module) or nf4_computes_in_fp8(module)


def shared_fp8_input(x: torch.Tensor, modules: tuple[nn.Module, ...]) -> FP8Input | None:
    """``x`` quantized once (`quantize_input`) when two or more `modules` read it and every one computes
    with FP8 GEMMs (`computes_in_fp8`: an FP8 weight, or an NF4 one made FP8 per call) and shares its
    input (attribute ``share_fp8_input``, set by LoRA's ``fp8_shared_input`` option); else None, and
    each module quantizes ``x`` itself. Each such module's ``forward(x, x_fp8=...)`` takes it. The
    result is the same bit for bit either way: the same rows are quantized by the same arithmetic, once
    instead of once per projection (an amax pass and a scaled cast of ``x`` saved per extra reader: two
    for q/k/v, one for the MLP's gate/up)."""
    if len(modules) < 2 or not all(computes_in_fp8(m) and getattr(m, SHARE_INPUT, True) for m in modules):
        return None
    return quantize_input(x)


def project_shared(x: torch.Tensor, *modules: nn.Module) -> list[torch.Tensor]:
    """Each of `modules` applied to ``x``, the FP8 ones sharing one quantization of it (`shared_fp8_input`)."""
    x_fp8 = shared_fp8_input(x, modules)
    if x_fp8 is None:
        return [m(x) for m in modules]
    return [m(x, x_fp8=x_fp8) for m in modules]


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

    def forward(self, x: torch.Tensor, x_fp8: FP8Input | None = None) -> torch.Tensor:
        return fp8_linear(self, x, self.bias, x_fp8)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp8"


# An FP8 copy of a weight the module keeps dense (the output projection, tied to the embedding or not):
# non-persistent buffers, so that state-dict keys and checkpoints do not change; integer bit views, as above.
FP8_COPY_BUFFERS = ("weight_fp8_copy", "weight_fp8_copy_scale")
_COPY = "_fp8_copy_spec"  # module attribute: (compute dtype, FP8 input gradient) of its FP8 copy
_COPY_OF = "_fp8_copy_of"  # module attribute: (storage pointer, version) of the weight the copy was made from


def _weight_stamp(weight: torch.Tensor) -> tuple[int, int]:
    """What changes when a weight is replaced (a new storage) or written in place (its version)."""
    return weight.data_ptr(), weight._version


def register_fp8_copy(module: nn.Module, *, fp8_input_grad: bool = True) -> None:
    """Give `module` (which has a dense ``weight`` [out, in], parameter or property) an FP8 copy of it,
    empty until `refresh_fp8_copy`; its extra memory is out x in bytes + 4 bytes a row."""
    weight = module.weight
    for name, shape, dtype in zip(FP8_COPY_BUFFERS, (weight.shape, weight.shape[:1]), (torch.uint8, torch.int32)):
        module.register_buffer(name, torch.empty(shape, dtype=dtype, device="meta"), persistent=False)
    setattr(module, _COPY, (weight.dtype, fp8_input_grad))
    if not weight.is_meta:
        refresh_fp8_copy(module)


def refresh_fp8_copy(module: nn.Module) -> None:
    """Quantize `module`'s current dense ``weight`` into its FP8 copy (after the weight is loaded)."""
    dtype, _ = getattr(module, _COPY)
    weight = module.weight.detach()
    check_fp8_device(weight.device, tuple(weight.shape))
    q = quantize_fp8(weight, dtype)
    module.weight_fp8_copy, module.weight_fp8_copy_scale = q.data.view(torch.uint8), q.scale.view(torch.int32)
    setattr(module, _COPY_OF, _weight_stamp(module.weight))


def has_fp8_copy(module: nn.Module) -> bool:
    """Whether `module` holds an FP8 copy of its weight (`register_fp8_copy`)."""
    return hasattr(module, _COPY)


def get_fp8_copy(module: nn.Module) -> FP8Weight:
    """The `FP8Weight` view of `module`'s FP8 copy; a TunerError when it was not made from the current
    weight (never filled, or the weight was loaded or changed since)."""
    dtype, fp8_input_grad = getattr(module, _COPY)
    if getattr(module, _COPY_OF, None) != _weight_stamp(module.weight):
        raise TunerError(
            f"the FP8 copy of {type(module).__name__}'s weight was not made from its current weight",
            fix="call tuner.peft.initialize_adapters(model) after loading the base weights",
        )
    data, scale = module.weight_fp8_copy.view(FP8_DTYPE), module.weight_fp8_copy_scale.view(torch.float32)
    return FP8Weight(data, scale, dtype, fp8_input_grad)


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
    """Return `base_dtype` (None or one of `BASE_DTYPES`); a ConfigError names a bad value.

    Without ``quantize_base`` the base is stored in FP8 (per-row scales) and its GEMMs run in FP8. With
    ``quantize_base`` (QLoRA) it stays stored in NF4 and only its compute changes: each call dequantizes
    it, quantizes it per row to e4m3 and runs the same FP8 GEMMs (`tuner.quantization.compute_nf4_in_fp8`);
    ``fp8_all`` / ``fp8_fwd`` mean the same input-gradient recipe in both cases."""
    if base_dtype is None:
        return None
    if base_dtype not in BASE_DTYPES:
        store = "NF4 base computing in bf16" if quantize_base else "base in the model's dtype"
        raise ConfigError(
            f"unknown base_dtype {base_dtype!r}{did_you_mean(str(base_dtype), BASE_DTYPES)}",
            fix=f"set model.base_dtype to one of {list(BASE_DTYPES)}, or drop it for a {store}",
        )
    return base_dtype
