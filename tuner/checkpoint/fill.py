"""The one way weights get into a model: build it without allocating it, then fill it from a
checkpointer on the target device, one weight file at a time.

The model is built on the meta device, so no random initialisation is paid for and no full
copy exists before the weights arrive. The checkpointer hands over each weight file's converted
state dict (``load_checkpoint(on_shard=...)``); its tensors are moved to the device and cast one
at a time (an NF4 base is quantized as each dense weight arrives, so QLoRA never holds the bf16
model); what the checkpoint does not hold (LoRA adapters) is allocated afterwards and initialised
by the caller. Training, generation, evaluation and merging all load through `fill_model`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from tuner.checkpoint.model_state import check_state_dict
from tuner.config import instantiate
from tuner.devices import set_default_dtype
from tuner.errors import CheckpointError
from tuner.quantization import (
    fp8_spec,
    has_fp8_weight,
    has_nf4_weight,
    nf4_spec,
    quantize_state_dict_into,
    set_fp8_weight,
    set_nf4_weight,
)

#: The `torch.nn.init` functions that modules' constructors call to fill their parameters.
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
)


@contextlib.contextmanager
def _no_parameter_init() -> Iterator[None]:
    """Constructors skip `torch.nn.init`: meta tensors hold no values, and a random fill on meta
    runs torch's Python meta kernels, whose first call imports the compiler stack (~2 s a process)."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in saved:
            setattr(nn.init, name, _leave_as_is)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _leave_as_is(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def build_on_meta(model_cfg: Any, dtype: torch.dtype) -> nn.Module:
    """Instantiate the model config on the meta device with parameters in ``dtype``."""
    with set_default_dtype(dtype), torch.device("meta"), _no_parameter_init():
        return instantiate(model_cfg)


def materialize_remaining(model: nn.Module, device: torch.device) -> list[str]:
    """Allocate (uninitialised) every parameter and buffer still on meta; return their names."""
    names = []
    for mname, module in model.named_modules():
        for pname, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                new = nn.Parameter(torch.empty_like(param, device=device), requires_grad=param.requires_grad)
                setattr(module, pname, new)
                names.append(f"{mname}.{pname}" if mname else pname)
        for bname, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_meta:
                persistent = bname not in module._non_persistent_buffers_set
                module.register_buffer(bname, torch.empty_like(buf, device=device), persistent=persistent)
                names.append(f"{mname}.{bname}" if mname else bname)
    return names


class StreamingLoad:
    """Fill a meta-built model from checkpoint shards as they arrive (a checkpointer's ``on_shard``).

    Each shard is checked (unexpected keys, shapes), then its tensors are moved, cast and, for an
    NF4 base, quantized one at a time, so host memory stays near one weight file and the GPU
    never holds a dense copy of a quantized model. `finish` reports weights no shard provided.
    """

    def __init__(
        self, model: nn.Module, device: torch.device, dtype: torch.dtype, may_be_missing: Iterable[str] = ()
    ) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self.may_be_missing = set(may_be_missing)
        self.shards = 0

    def __call__(self, shard: Mapping[str, torch.Tensor]) -> None:
        check_state_dict(self.model, shard, strict=True, check_missing=False)
        quantize_state_dict_into(self.model, shard, device=self.device, dtype=self.dtype, strict=False)
        self.shards += 1

    def finish(self) -> None:
        """Raise if a needed weight never arrived; allocate what may be missing; rebuild rope tables."""
        missing = [k for k, v in self.model.state_dict().items() if v.is_meta and k not in self.may_be_missing]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise CheckpointError(
                f"the checkpoint lacks {len(missing)} weight(s) the model needs: {shown}",
                "check checkpointer.checkpoint_files (a shard left out?) and that the model builder matches the "
                "checkpoint",
            )
        materialize_remaining(self.model, self.device)
        if hasattr(self.model, "rope_init"):
            self.model.rope_init()  # non-persistent rotary tables are not in any checkpoint


def fill_model(
    model: nn.Module,
    checkpointer: Any,
    device: torch.device,
    dtype: torch.dtype,
    may_be_missing: Iterable[str] = (),
    random_if_no_weights: bool = False,
) -> dict[str, Any]:
    """Fill ``model`` (built on meta) from ``checkpointer``'s weight files on ``device`` in ``dtype``,
    one file at a time; return the rest of the checkpoint (``adapter``, ``training_state``,
    ``resumed_from``). Keys in ``may_be_missing`` may be absent (they stay uninitialised). A
    checkpointer that holds no weight file at all (a benchmark's) leaves a random initialisation
    when ``random_if_no_weights``; otherwise every weight the model needs must arrive."""
    loader = StreamingLoad(model, device, dtype, may_be_missing)
    checkpoint = checkpointer.load_checkpoint(on_shard=loader)
    if random_if_no_weights and not loader.shards:
        random_init(model, device)
    else:
        loader.finish()
    return checkpoint


@torch.no_grad()
def random_init(model: nn.Module, device: torch.device, std: float = 0.02) -> None:
    """Give a meta-built model random weights on ``device`` (training from scratch, benchmarks).

    Linear and embedding weights are drawn from N(0, std), norms start at their modules' own
    reset values; an NF4 or FP8 base is quantized from random weights one module at a time, so a
    QLoRA model never holds its dense base.
    """
    for module in model.modules():
        for has, spec, fill in ((has_nf4_weight, nf4_spec, set_nf4_weight), (has_fp8_weight, fp8_spec, set_fp8_weight)):
            if has(module):
                fill(module, torch.randn(spec(module)[0], device=device, dtype=torch.bfloat16) * std)
    materialize_remaining(model, device)
    for name, param in model.named_parameters():
        if param.dim() >= 2:
            param.normal_(0.0, std)
        elif "norm" in name or "scale" in name or name.endswith("magnitude"):
            param.fill_(1.0)
        else:
            param.zero_()
    if hasattr(model, "rope_init"):
        model.rope_init()
