"""Optimizers from the config: any torch.optim or bitsandbytes optimizer by ``_component_``,
fused AdamW on CUDA by default, and optimizer-in-backward (step each parameter as soon as its
gradient is ready, so full gradients never coexist)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from tuner.config import instantiate, resolve_component
from tuner.errors import ConfigError


def build_optimizer(cfg_optimizer: Any, params: Iterable, device: torch.device) -> torch.optim.Optimizer:
    """Instantiate ``cfg_optimizer`` over ``params`` (tensors or param-group dicts)."""
    component = cfg_optimizer.get("_component_") if hasattr(cfg_optimizer, "get") else None
    if component is None:
        raise ConfigError("optimizer: missing _component_", "e.g. optimizer._component_=torch.optim.AdamW")
    fn = resolve_component(component, "optimizer")
    extra: dict[str, Any] = {}
    if device.type == "cuda" and fn in (torch.optim.AdamW, torch.optim.Adam) and "fused" not in cfg_optimizer:
        extra["fused"] = True
    return instantiate(cfg_optimizer, params, **extra)


class OptimizerInBackward:
    """One optimizer per parameter, stepped from a post-accumulate-grad hook.

    Exposes ``state_dict``/``load_state_dict``/``param_groups``-style access for checkpointing
    and lr scheduling (the scheduler drives a proxy optimizer whose lr is copied to each one).
    """

    def __init__(self, cfg_optimizer: Any, model: nn.Module, device: torch.device) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizers = {p: build_optimizer(cfg_optimizer, [p], device) for p in self.params}
        # The proxy only carries the lr (never steps), so it is a plain CPU optimizer: one of the
        # configured kind could refuse the CPU (older bitsandbytes' paged optimizers did).
        lr = next(iter(self.optimizers.values())).param_groups[0]["lr"] if self.optimizers else cfg_optimizer.get("lr", 1e-3)
        self.lr_proxy = torch.optim.SGD([torch.zeros((), requires_grad=True)], lr=float(lr))
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._step_hook)

    def _step_hook(self, param: torch.Tensor) -> None:
        opt = self.optimizers[param]
        for group in opt.param_groups:
            group["lr"] = self.lr_proxy.param_groups[0]["lr"]
        opt.step()
        opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {str(i): self.optimizers[p].state_dict() for i, p in enumerate(self.params)}

    def load_state_dict(self, state: dict) -> None:
        for i, p in enumerate(self.params):
            self.optimizers[p].load_state_dict(state[str(i)])

