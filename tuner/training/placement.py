"""Where the model lives: one device, or sharded across ranks (see `distributed.py`).

The training loop talks to a placement for everything that differs between one device and many:
wrapping the model, reducing counts across ranks, gathering a full state dict to save.
"""
from __future__ import annotations

import torch
from torch import nn


class SingleDevice:
    """Everything on one device, one process."""

    rank = 0
    world_size = 1
    is_main = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def shard(self, model: nn.Module, cfg) -> nn.Module:
        return model

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict on the CPU (as the sharded placement gives it), ready to merge and save."""
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def optimizer_state_dict(self, model: nn.Module, optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, model: nn.Module, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass
