"""The check every quantizer (NF4, FP8) runs on the dense weight it is given."""

from __future__ import annotations

import torch

from tuner.errors import TunerError


def check_weight_to_quantize(weight: object, caller: str) -> torch.Tensor:
    """Return `weight` if it is a 2-D floating tensor with values (not on meta); else a TunerError
    naming `caller` and what it got."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        is_tensor = isinstance(weight, torch.Tensor)
        what = f"a {weight.dim()}-D {weight.dtype} tensor" if is_tensor else type(weight).__name__
        raise TunerError(f"{caller} needs a 2-D floating-point weight, got {what}")
    if weight.is_meta:
        raise TunerError(
            f"{caller} got a weight on the meta device, which has no values",
            fix="load real weights first (load_state_dict(..., assign=True) or quantize_state_dict_into)",
        )
    return weight
