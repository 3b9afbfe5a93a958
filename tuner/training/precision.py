"""Training dtypes: bf16, fp32, and fp16 with a gradient scaler (for GPUs without bf16)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from tuner.errors import ConfigError

_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
}


def get_dtype(name: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype:
    """Map a config value (``bf16`` / ``fp32`` / ``fp16``) to a torch dtype, checking hardware support."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return torch.float32
    dtype = _DTYPES.get(str(name).lower())
    if dtype is None:
        raise ConfigError(f"dtype: unknown value {name!r}", "use bf16, fp32 or fp16")
    if dtype is torch.bfloat16 and device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("dtype: bf16 is not supported on this GPU", "set dtype=fp16 (uses a gradient scaler) or dtype=fp32")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The config name of a dtype (``torch.bfloat16`` -> ``bf16``)."""
    return {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


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
    import os

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
