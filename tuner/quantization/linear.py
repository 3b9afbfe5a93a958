"""A frozen NF4 weight held by a module: buffers, load-time quantization, `NF4Linear`.

`register_nf4_weight(module, out_features, in_features)` gives any module (an `NF4Linear`, or a
LoRA layer with ``quantize_base=True``) a frozen NF4 weight. What `state_dict()` holds for it
(the module's own key ``weight`` is never a parameter):

    <prefix>weight_nf4            uint8 [(out*in+1)//2]   two 4-bit NF4 codes per byte
    <prefix>weight_absmax         uint8 [ceil(out*in/64)] block scales, quantized to 8 bits
    <prefix>weight_absmax_scale   int32 [ceil(blocks/256)] float32 bits: scales of the block scales
    <prefix>weight_absmax_offset  int32 []                 float32 bits: mean block scale

The two float32 tensors are kept as their int32 bit patterns so that ``model.to(torch.bfloat16)``
(which casts every floating buffer) cannot round them. Such a state dict loads back bit-exactly.

Loading a dense ``<prefix>weight`` (bf16/fp16/fp32, e.g. from a HF checkpoint) into the module
quantizes it on the fly (a load_state_dict pre-hook), which is what lets a model built on the meta
device be filled one tensor at a time with ``load_state_dict(sd, strict=False, assign=True)`` or
`tuner.quantization.quantize_state_dict_into`. Quantization runs on the module's device, or on
the incoming tensor's device when the module is still on meta.

For export (merged model, HF format), `dequantized_state_dict(model)` returns the state dict with
each NF4 weight dequantized back under its original key ``weight``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tuner.errors import TunerError
from tuner.quantization.fp8 import FP8Input, check_fp8_device
from tuner.quantization.nf4 import (
    NF4Weight,
    check_compute_dtype,
    dequantize_nf4,
    fp8_row_scales,
    linear_nf4,
    linear_nf4_fp8,
    lookup_tables,
    nf4_sizes,
    quantize_nf4,
)

_BUFFERS = ("weight_nf4", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset")
_SPEC = "_nf4_spec"  # module attribute: (shape, compute dtype) of its NF4 weight
_SAVE_DENSE = "_nf4_save_dense"  # module attribute: keep the dequantized weight for backward
_FP8_COMPUTE = "_nf4_fp8_compute"  # module attribute: compute through FP8 GEMMs; its value: fp8_input_grad
# Non-persistent buffer of a module computing in FP8: `nf4.fp8_row_scales` of its frozen weight as int32
# bits (``model.to(torch.bfloat16)`` casts floating buffers), kept in step with the NF4 buffers by
# `set_nf4_weight` and a load_state_dict post-hook.
_FP8_ROW_SCALES = "weight_fp8_row_scales"


def has_nf4_weight(module: nn.Module) -> bool:
    """Whether `module` holds a weight registered by `register_nf4_weight`."""
    return hasattr(module, _SPEC)


def nf4_spec(module: nn.Module) -> tuple[torch.Size, torch.dtype]:
    """(shape [out, in], compute dtype) of `module`'s NF4 weight."""
    if not has_nf4_weight(module):
        raise TunerError(f"{type(module).__name__} has no NF4 weight; call register_nf4_weight first")
    return getattr(module, _SPEC)


def register_nf4_weight(
    module: nn.Module,
    out_features: int,
    in_features: int,
    *,
    compute_dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str | None = None,
) -> None:
    """Give `module` an (empty) frozen NF4 weight of shape [out_features, in_features].

    The buffers are zero-filled (or meta, on the meta device) until `set_nf4_weight` or a
    `load_state_dict` fills them. `compute_dtype` is what the weight dequantizes to.
    """
    check_compute_dtype(compute_dtype)
    if has_nf4_weight(module):
        raise TunerError(f"{type(module).__name__} already has an NF4 weight")
    if "weight" in module._parameters or "weight" in module._buffers:
        raise TunerError(
            f"{type(module).__name__} already has a dense `weight`", fix="delete it before registering an NF4 one"
        )
    n_packed, n_blocks, n_scales = nf4_sizes(out_features * in_features)
    zeros = lambda shape, dtype: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
    module.register_buffer("weight_nf4", zeros(n_packed, torch.uint8))
    module.register_buffer("weight_absmax", zeros(n_blocks, torch.uint8))
    module.register_buffer("weight_absmax_scale", zeros(n_scales, torch.int32))
    module.register_buffer("weight_absmax_offset", zeros((), torch.int32))
    setattr(module, _SPEC, (torch.Size((out_features, in_features)), compute_dtype))
    module.register_load_state_dict_pre_hook(_quantize_dense_weight_on_load)


def _buffers_of(q: NF4Weight) -> tuple[torch.Tensor, ...]:
    return (q.packed, q.absmax, q.absmax_scale.view(torch.int32), q.absmax_offset.view(torch.int32))


def _quantize_for(module: nn.Module, weight: torch.Tensor, name: str) -> tuple[torch.Tensor, ...]:
    """Buffers for dense `weight` on `module`'s device (or `weight`'s when the module is on meta)."""
    shape, dtype = getattr(module, _SPEC)
    if tuple(weight.shape) != tuple(shape):
        raise TunerError(
            f"{name}: shape {list(weight.shape)} does not fit the model's NF4 weight {list(shape)}",
            fix="check that the model config matches the checkpoint",
        )
    if weight.is_meta:  # a meta state dict (shape checks, dry runs): meta buffers of the right shapes
        return tuple(torch.empty_like(b, device="meta") for b in (getattr(module, n) for n in _BUFFERS))
    target = module.weight_nf4.device
    q = quantize_nf4(weight if target.type == "meta" else weight.to(target), dtype)
    lookup_tables(q.device)  # built here, in eager code, so compiled forwards find them ready
    return _buffers_of(q)


def _quantize_dense_weight_on_load(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: a dense `<prefix>weight` becomes the NF4 buffers' entries (and a load
    that changes the weight marks the module's kept FP8 row scales for `_refresh_fp8_row_scales`)."""
    key = prefix + "weight"
    if _FP8_ROW_SCALES in module._buffers and any(prefix + n in state_dict for n in ("weight", *_BUFFERS)):
        module._nf4_weight_loading = True
    if key not in state_dict:
        return
    for name, tensor in zip(_BUFFERS, _quantize_for(module, state_dict.pop(key), key)):
        state_dict[prefix + name] = tensor


def set_nf4_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Quantize dense `weight` into `module`'s NF4 buffers (replacing them; meta modules included)."""
    if not has_nf4_weight(module):
        raise TunerError(f"{type(module).__name__} has no NF4 weight; call register_nf4_weight first")
    for name, tensor in zip(_BUFFERS, _quantize_for(module, weight, "weight")):
        setattr(module, name, tensor)
    _refresh_fp8_row_scales(module)


def _refresh_fp8_row_scales(module: nn.Module) -> None:
    """Recompute the kept FP8 row scales of `module` (computing in FP8) from its NF4 buffers, once they
    hold a weight (not meta)."""
    if _FP8_ROW_SCALES in module._buffers and not module.weight_nf4.is_meta:
        with torch.no_grad():
            module._buffers[_FP8_ROW_SCALES] = fp8_row_scales(get_nf4_weight(module)).view(torch.int32)


def _refresh_fp8_row_scales_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """load_state_dict post-hook: a load that changed the NF4 weight (marked by the pre-hook) refreshes
    the kept FP8 row scales; loads of other keys (biases, adapters) leave them."""
    if module.__dict__.pop("_nf4_weight_loading", False):
        _refresh_fp8_row_scales(module)


def get_nf4_weight(module: nn.Module) -> NF4Weight:
    """The `NF4Weight` view of `module`'s buffers (no copies)."""
    shape, dtype = getattr(module, _SPEC)
    if not torch.compiler.is_compiling() and not module.weight_nf4.is_meta:
        lookup_tables(module.weight_nf4.device)  # e.g. after .to(device): ready before any compiled forward
    if module.weight_nf4.is_meta:
        raise TunerError(
            f"the NF4 weight of {type(module).__name__} is still on the meta device (never loaded)",
            fix="load the checkpoint with load_state_dict(sd, strict=False, assign=True) or quantize_state_dict_into",
        )
    return NF4Weight(
        module.weight_nf4,
        module.weight_absmax,
        module.weight_absmax_scale.view(torch.float32),
        module.weight_absmax_offset.view(torch.float32),
        shape,
        dtype,
    )


def keep_dense_weights_for_backward(module: nn.Module, enabled: bool = True) -> int:
    """Let each NF4 weight under `module` keep its dequantized copy from forward to backward (its FP8
    copy, 1 byte a value, where it computes in FP8: `compute_nf4_in_fp8`).

    For layers under activation checkpointing: their forward is recomputed right before their
    backward, so keeping the dense weights costs one layer's worth of bf16 weights for a moment and
    saves a dequantization per weight and step (see `linear_nf4`'s ``save_dense``): faster at a
    slightly higher peak (measured on the 8B QLoRA shape: docs/benchmarks.md).
    Returns how many weights changed.
    """
    count = 0
    for m in module.modules():
        if has_nf4_weight(m):
            setattr(m, _SAVE_DENSE, bool(enabled))
            count += 1
    return count


def compute_nf4_in_fp8(module: nn.Module, fp8_input_grad: bool | None) -> None:
    """Let `module`'s NF4 weight compute through FP8 GEMMs (`linear_nf4_fp8`: dequantized, quantized
    per row to e4m3, `linear_fp8`), its storage unchanged: QLoRA with ``base_dtype: fp8``.
    ``fp8_input_grad``: the input gradient's GEMM in FP8 too (``fp8_all``) or in the compute dtype
    (``fp8_fwd``); None: back to the plain NF4 linear (a dense GEMM in the compute dtype). The rows'
    FP8 scales are computed once and kept (a non-persistent buffer, recomputed whenever the NF4 weight
    is set or loaded), so each call only writes the e4m3 weight."""
    shape = nf4_spec(module)[0]  # a clear error where there is no NF4 weight
    if fp8_input_grad is None:
        if hasattr(module, _FP8_COMPUTE):
            delattr(module, _FP8_COMPUTE)
            del module._buffers[_FP8_ROW_SCALES]
        return
    if not hasattr(module, _FP8_COMPUTE):
        empty = torch.zeros((2, shape[0]), dtype=torch.int32, device=module.weight_nf4.device)
        module.register_buffer(_FP8_ROW_SCALES, empty, persistent=False)
        if not getattr(module, "_nf4_fp8_hook", False):
            module.register_load_state_dict_post_hook(_refresh_fp8_row_scales_after_load)
            module._nf4_fp8_hook = True
        _refresh_fp8_row_scales(module)
    setattr(module, _FP8_COMPUTE, bool(fp8_input_grad))


def nf4_computes_in_fp8(module: nn.Module) -> bool:
    """Whether `module`'s NF4 weight computes through FP8 GEMMs (`compute_nf4_in_fp8`)."""
    return getattr(module, _FP8_COMPUTE, None) is not None


def nf4_linear(
    module: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None, x_fp8: FP8Input | None = None
) -> torch.Tensor:
    """``x @ W^T (+ bias)`` with `module`'s NF4 weight, honouring `keep_dense_weights_for_backward` and
    `compute_nf4_in_fp8`; ``x_fp8``: ``x`` already quantized for FP8 compute (`shared_fp8_input`),
    ignored by the plain NF4 linear."""
    q = get_nf4_weight(module)
    save_dense = getattr(module, _SAVE_DENSE, False)
    fp8_input_grad = getattr(module, _FP8_COMPUTE, None)
    if fp8_input_grad is None:
        return linear_nf4(x, q, bias, save_dense=save_dense)
    if not torch.compiler.is_compiling():
        check_fp8_device(module.weight_nf4.device, tuple(q.shape))  # e.g. after .to() onto a GPU without FP8
    row_scales = module._buffers[_FP8_ROW_SCALES].view(torch.float32)
    return linear_nf4_fp8(
        x, q, bias, fp8_input_grad=fp8_input_grad, x_fp8=x_fp8, save_dense=save_dense, row_scales=row_scales
    )


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored in NF4; drop-in for a frozen `nn.Linear`.

    Forward dequantizes the weight once to the compute dtype and runs a plain matmul
    (`linear_nf4`); the input gets a gradient, the weight never does. The bias, if any, stays
    dense (compute dtype) and frozen.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        compute_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        register_nf4_weight(self, out_features, in_features, compute_dtype=compute_dtype, device=device)
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=compute_dtype, device=device), requires_grad=False)
            if bias
            else None
        )

    @property
    def compute_dtype(self) -> torch.dtype:
        return getattr(self, _SPEC)[1]

    @classmethod
    def from_linear(cls, linear: nn.Linear, compute_dtype: torch.dtype = torch.bfloat16) -> "NF4Linear":
        """Quantize `linear` (on its device). A meta `linear` gives an empty meta `NF4Linear` to load into."""
        if not isinstance(linear, nn.Linear):
            raise TunerError(f"NF4Linear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        module = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            compute_dtype=compute_dtype,
            device=w.device,
        )
        if not w.is_meta:
            set_nf4_weight(module, w)
            if linear.bias is not None:
                module.bias.data.copy_(linear.bias.detach())
        return module

    def dequantize(self) -> torch.Tensor:
        """The dense weight [out_features, in_features] in the compute dtype."""
        return dequantize_nf4(get_nf4_weight(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nf4_linear(self, x, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, nf4, compute_dtype={self.compute_dtype}"
        )


def dequantized_state_dict(
    model: nn.Module, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with every NF4 weight dequantized under its original key ``weight``.

    Keys keep the state dict's order. Each dequantized weight is moved to `device` (e.g. "cpu")
    as soon as it is made, so the GPU holds one dense weight at a time; `dtype` (default: the
    compute dtype) casts those weights. Other entries are returned as `state_dict()` gives them.
    """
    return _dequantize_entries(model, model.state_dict(), device=device, dtype=dtype)


def reparametrize_as_dtype_state_dict_post_hook(
    model: nn.Module,
    state_dict: dict[str, Any],
    *args: Any,
    dtype: torch.dtype = torch.bfloat16,
    offload_to_cpu: bool = True,
    **kwargs: Any,
) -> None:
    """A state-dict hook (torchtune's name) that gives each NF4 weight as a dense ``weight`` of
    ``dtype`` (on CPU with ``offload_to_cpu``), in place: register it on the model with
    ``model._register_state_dict_hook(partial(reparametrize_as_dtype_state_dict_post_hook, dtype=...))``."""
    prefix = args[0] if args and isinstance(args[0], str) else ""  # state_dict's hook arguments: prefix, metadata
    dense = _dequantize_entries(model, state_dict, device="cpu" if offload_to_cpu else None, dtype=dtype, prefix=prefix)
    state_dict.clear()
    state_dict.update(dense)


def _dequantize_entries(
    model: nn.Module,
    state_dict: dict[str, Any],
    *,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    prefix: str = "",
) -> dict[str, Any]:
    """``state_dict`` (of ``model``, its keys under ``prefix``) with each NF4 weight's buffers
    replaced by the dense ``weight``."""
    # Activation-checkpoint wrappers add a level to module names but not to state-dict keys.
    modules = {
        prefix + ((name + ".").replace("_checkpoint_wrapped_module.", "") if name else ""): m
        for name, m in model.named_modules()
        if has_nf4_weight(m)
    }
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        prefix = prefix + "." if prefix else ""
        if prefix in modules and leaf in _BUFFERS:
            if leaf == "weight_nf4":
                w = dequantize_nf4(get_nf4_weight(modules[prefix]))
                out[prefix + "weight"] = w.to(device=device or w.device, dtype=dtype or w.dtype)
            continue
        out[key] = value
    return out
