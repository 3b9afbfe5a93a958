"""What a recompute in backward needs to repeat its forward exactly: the RNG state (dropout draws the
same masks) and the autocast state (fp16 mixed precision computes in the same dtypes). Used by the
sequence-tiled MLP here and by the trainer's offloaded activation checkpoints."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

#: The CPU generator's state, and the CUDA generator's of the device (None off CUDA).
RngState = tuple[torch.Tensor, torch.Tensor | None]
#: Whether autocast is on for the device type, and its dtype.
AutocastState = tuple[bool, torch.dtype]


def rng_state(device: torch.device) -> RngState:
    """The RNG state a forward on ``device`` starts from."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def restored_rng(device: torch.device, state: RngState) -> Iterator[None]:
    """Run the block from ``state`` (the forward's), and give the caller its own RNG state back after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def autocast_state(device: torch.device) -> AutocastState:
    """Whether autocast is on for ``device``'s type now, and in which dtype."""
    return torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)


def restored_autocast(device: torch.device, state: AutocastState) -> torch.autocast:
    """The forward's autocast state, for a recompute in backward (where autocast is off)."""
    enabled, dtype = state
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)
