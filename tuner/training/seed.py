"""`set_seed`: seed Python's, NumPy's and torch's random generators (torchtune's function)."""

from __future__ import annotations

import os
import random
from typing import Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from tuner.errors import ConfigError

_MAX_SEED = 2**32 - 1  # NumPy's generator takes uint32 seeds


def world_size_and_rank() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, else (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def set_seed(seed: Optional[int] = None, debug_mode: Optional[Union[str, int]] = None) -> int:
    """Seed every generator with ``seed + rank`` (each rank draws different random numbers) and
    return ``seed`` (a random one, the same on every rank, when None).

    ``debug_mode`` (torch's deterministic debug mode: "default"/0, "warn"/1, "error"/2) switches
    deterministic algorithms on (and cuDNN's benchmark off) or, for 0, back off; None leaves them.
    """
    world_size, rank = world_size_and_rank()
    max_val = _MAX_SEED - world_size + 1
    if seed is None:
        drawn = torch.randint(0, max_val, (1,))
        if world_size > 1:
            dist.broadcast(drawn, src=0)
        seed = int(drawn.item())
    if not 0 <= seed <= max_val:
        raise ConfigError(f"Invalid seed value provided: {seed}. Value must be in the range [0, {max_val}]", "set seed")
    local_seed = seed + rank
    torch.manual_seed(local_seed)
    random.seed(local_seed)
    try:
        np.random.seed(local_seed)
    except ImportError:  # numpy is optional for torch
        pass
    if debug_mode is not None:
        torch.set_deterministic_debug_mode(debug_mode)
        deterministic = torch.get_deterministic_debug_mode() != 0
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return seed
