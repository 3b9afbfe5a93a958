"""NF4 storage of frozen base weights (QLoRA) through bitsandbytes, imported lazily.

Public API:
- `quantize_nf4(weight, dtype=None) -> NF4Weight`, `dequantize_nf4(q) -> Tensor`,
  `linear_nf4(x, q, bias=None) -> Tensor` (nf4.py): the format and the frozen linear op;
  `linear_nf4_fp8`: the same op through FP8 GEMMs (the weight made FP8 per call).
- `NF4Linear` (+ `NF4Linear.from_linear`); `nf4_linear(module, x, bias)`;
  `keep_dense_weights_for_backward(module)` (activation-checkpointed layers);
  `compute_nf4_in_fp8(module, ...)`, `nf4_computes_in_fp8` (QLoRA with ``base_dtype: fp8``: NF4
  storage, FP8 GEMMs through `linear_nf4_fp8`); `register_nf4_weight`, `get_nf4_weight`,
  `set_nf4_weight`, `has_nf4_weight`, `nf4_spec` for other modules (LoRA layers with
  ``quantize_base=True``); `dequantized_state_dict(model)` for export (linear.py, whose docstring
  fixes what the state dict holds); `reparametrize_as_dtype_state_dict_post_hook` (torchtune's
  state-dict hook giving dense weights).
- FP8 (e4m3, per-row scales) for LoRA's ``base_dtype: fp8``: `quantize_fp8`, `dequantize_fp8`,
  `linear_fp8` (fp8.py: the format, and both GEMMs through ``torch._scaled_mm`` on Ada / Hopper,
  emulated in float32 elsewhere); `register_fp8_weight`, `set_fp8_weight`, `get_fp8_weight`,
  `has_fp8_weight`, `fp8_spec`, `fp8_linear`, `check_base_dtype`, `fp8_input_grad`, `FP8Linear` (a frozen
  linear LoRA does not adapt) (fp8_storage.py: a module's buffers); `quantize_input`, `FP8Input`,
  `shared_fp8_input`, `project_shared` (one quantization of an activation for every FP8 projection
  that reads it); `register_fp8_copy`, `refresh_fp8_copy`, `has_fp8_copy`, `get_fp8_copy` (an FP8 copy
  beside a dense weight: the output projection's, for the logits GEMM of the loss).
- `quantize_state_dict_into(model, tensors, device=..., strict=...)` (load.py): quantize-as-load
  into a model built on the meta device.

What runs where: bitsandbytes 0.50's `quantize_4bit` / `dequantize_4bit` run on CPU (pure
PyTorch / C++ CPU kernels) and on CUDA (CUDA kernels), with the same calls and the same stored
format; everything here (quantize, dequantize, forward and backward of `linear_nf4`, loading,
`.to()` between devices) therefore works on CPU, which is what the tests use. Nothing here uses
bitsandbytes' fused 4-bit GEMM/GEMV kernels: a forward is one dequantize plus a plain matmul, on
any device. Without bitsandbytes installed, the first use raises a TunerError saying how to
install it; importing this package does not need it.
"""

from tuner.quantization.fp8 import FP8Input, FP8Weight, dequantize_fp8, linear_fp8, quantize_fp8, quantize_input
from tuner.quantization.fp8_storage import (
    BASE_DTYPES,
    FP8_BUFFERS,
    BaseDtype,
    FP8Linear,
    check_base_dtype,
    fp8_input_grad,
    fp8_linear,
    fp8_spec,
    get_fp8_copy,
    get_fp8_weight,
    has_fp8_copy,
    has_fp8_weight,
    project_shared,
    refresh_fp8_copy,
    register_fp8_copy,
    register_fp8_weight,
    set_fp8_weight,
    shared_fp8_input,
)
from tuner.quantization.linear import (
    NF4Linear,
    compute_nf4_in_fp8,
    dequantized_state_dict,
    get_nf4_weight,
    has_nf4_weight,
    keep_dense_weights_for_backward,
    nf4_computes_in_fp8,
    nf4_linear,
    nf4_spec,
    register_nf4_weight,
    reparametrize_as_dtype_state_dict_post_hook,
    set_nf4_weight,
)
from tuner.quantization.load import LoadResult, quantize_state_dict_into
from tuner.quantization.nf4 import NF4Weight, dequantize_nf4, linear_nf4, linear_nf4_fp8, quantize_nf4

__all__ = [
    "NF4Weight",
    "quantize_nf4",
    "dequantize_nf4",
    "linear_nf4",
    "linear_nf4_fp8",
    "compute_nf4_in_fp8",
    "nf4_computes_in_fp8",
    "NF4Linear",
    "register_nf4_weight",
    "get_nf4_weight",
    "set_nf4_weight",
    "has_nf4_weight",
    "nf4_spec",
    "nf4_linear",
    "keep_dense_weights_for_backward",
    "dequantized_state_dict",
    "reparametrize_as_dtype_state_dict_post_hook",
    "quantize_state_dict_into",
    "LoadResult",
    "FP8Weight",
    "quantize_fp8",
    "dequantize_fp8",
    "linear_fp8",
    "FP8Input",
    "quantize_input",
    "shared_fp8_input",
    "project_shared",
    "register_fp8_copy",
    "refresh_fp8_copy",
    "has_fp8_copy",
    "get_fp8_copy",
    "BASE_DTYPES",
    "BaseDtype",
    "FP8_BUFFERS",
    "check_base_dtype",
    "fp8_input_grad",
    "FP8Linear",
    "register_fp8_weight",
    "set_fp8_weight",
    "get_fp8_weight",
    "has_fp8_weight",
    "fp8_spec",
    "fp8_linear",
]
