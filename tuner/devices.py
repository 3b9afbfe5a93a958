"""Devices and dtypes: which device a run uses, config dtype names (bf16, fp32, fp16 with a
gradient scaler for GPUs without bf16) and the default dtype a model is built in.

The lowest layer after `tuner.errors`: training, checkpoint filling, generation and merging all
read devices and dtypes through it. torchtune's ``torchtune.training.precision`` is this module
under its torchtune path (`tuner.training.precision`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Optional

import torch

from tuner.errors import ConfigError

# torchtune's table (its order matters to code that walks it); the long names are accepted too.
PRECISION_STR_TO_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
#: What a config's ``dtype`` key may say (training, generation, evaluation, merge).
CONFIG_DTYPES = ("bf16", "fp32", "fp16", "bfloat16", "float32", "float16")
_DTYPES = {
    **PRECISION_STR_TO_DTYPE,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float16": torch.float16,
    "float64": torch.float64,
}


class DtypeNotSupportedError(ConfigError, RuntimeError):
    """The device cannot compute in the requested dtype (a RuntimeError too, as torchtune's)."""


def verify_bf16_support(device: torch.device | None = None) -> bool:
    """Whether bf16 can be used: on CUDA a GPU that supports it (Ampere or newer), elsewhere (CPU,
    MPS) yes. Without ``device``, the CUDA GPU when there is one."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return True


def get_dtype(dtype: str | torch.dtype | None = None, device: torch.device | None = None) -> torch.dtype:
    """Map a config value (``bf16`` / ``fp32`` / ``fp16`` / ``fp64``, or a torch dtype) to a torch
    dtype (None: fp32), checking that ``device`` (default: the CUDA GPU if any) supports bf16."""
    if dtype is None:
        return torch.float32
    if not isinstance(dtype, torch.dtype):
        name = dtype
        dtype = _DTYPES.get(str(name).lower())
        if dtype is None:
            raise ConfigError(f"dtype: unknown value {name!r}", f"use one of {', '.join(PRECISION_STR_TO_DTYPE)}")
    if dtype is torch.bfloat16 and not verify_bf16_support(device):
        raise DtypeNotSupportedError(
            "bf16 precision was requested but not available on this hardware",
            "set dtype=fp16 (uses a gradient scaler) or dtype=fp32",
        )
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The config name of a dtype (``torch.bfloat16`` -> ``bf16``)."""
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(
        dtype, str(dtype).replace("torch.", "")
    )


def validate_expected_param_dtype(
    named_params: Iterable[tuple[str, torch.nn.Parameter]],
    dtype: torch.dtype,
    exclude_param_names: Optional[Iterable[str]] = None,
) -> None:
    """Check that every parameter (but ``exclude_param_names``) has ``dtype``; ConfigError otherwise."""
    excluded = set(exclude_param_names or ())
    for name, param in named_params:
        if name not in excluded and param.dtype != dtype:
            raise ConfigError(
                f"Parameter {name} has dtype {param.dtype}, but expected {dtype}",
                "load the checkpoint in the training dtype (dtype=...)",
            )


def _set_float32_precision(precision: str = "high") -> None:
    """fp32 matmuls on CUDA: "high" allows TF32 (faster on Ampere+), "highest" does not."""
    if not torch.cuda.is_available():
        return
    torch.set_float32_matmul_precision(precision)
    allow = precision != "highest"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


@contextlib.contextmanager
def set_default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters in ``dtype`` inside the block."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def get_device(name: str | None) -> torch.device:
    """``cuda`` / ``cpu`` / ``auto`` (None) -> a device; with several ranks, this rank's GPU."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for but no GPU is available", "set device=cpu")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device
