"""Optimizers from the config: any torch.optim or bitsandbytes optimizer by ``_component_``,
fused AdamW on CUDA by default, and optimizer-in-backward (step each parameter as soon as its
gradient is ready, so full gradients never coexist)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from tuner.config import instantiate, resolve_component
from tuner.errors import ConfigError, TrainingError


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
        lr = (
            next(iter(self.optimizers.values())).param_groups[0]["lr"]
            if self.optimizers
            else cfg_optimizer.get("lr", 1e-3)
        )
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


# ---- torchtune's optimizer-in-backward API, for recipes that build their own optimizers per parameter.
def register_optim_in_bwd_hooks(model: nn.Module, optim_dict: Mapping[nn.Parameter, torch.optim.Optimizer]) -> None:
    """Step ``optim_dict[p]`` (and clear its gradient) as soon as each trainable ``p``'s gradient is ready."""

    def step(param: torch.Tensor) -> None:
        optim_dict[param].step()
        optim_dict[param].zero_grad()

    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(step)


class OptimizerInBackwardWrapper:
    """The per-parameter optimizers as one object for checkpoints: ``state_dict`` / ``load_state_dict``
    keyed by parameter name (``optim_map``), ``get_optim_key``, and an lr scheduler driving them all."""

    def __init__(self, optim_map: Mapping[str, torch.optim.Optimizer]) -> None:
        self.optim_map = dict(optim_map)
        self.lr_scheduler = None

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optim_map.items()}

    def load_state_dict(self, optim_ckpt_map: Mapping[str, Any]) -> None:
        unexpected = [name for name in optim_ckpt_map if name not in self.optim_map]
        if unexpected:
            raise TrainingError(
                f"Trying to load optimizer state for unexpected param {unexpected[0]}",
                "resume with the model and trainable parameters the state was saved with",
            )
        missing = set(self.optim_map) - set(optim_ckpt_map)
        if missing:
            raise TrainingError(
                f"Expected to load optimizer state for params {sorted(missing)}",
                "resume from a complete optimizer state",
            )
        for name, state in optim_ckpt_map.items():
            self.optim_map[name].load_state_dict(state)

    def get_optim_key(self, key: str) -> Any:
        return next(iter(self.optim_map.values())).param_groups[0][key]

    def set_lr_scheduler(self, lr_scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        """Drive every optimizer's lr from ``lr_scheduler`` (built over any one of them)."""
        self.lr_scheduler = lr_scheduler
        original_step = lr_scheduler.step

        def step(epoch: int | None = None) -> None:
            original_step() if epoch is None else original_step(epoch)
            lr = lr_scheduler.get_last_lr()[0]
            for opt in self.optim_map.values():
                for group in opt.param_groups:
                    group["lr"] = lr

        lr_scheduler.step = step

    def step_lr_scheduler(self, epoch: int | None = None) -> None:
        if self.lr_scheduler is None:
            raise TrainingError("LR scheduler has not been set", "call set_lr_scheduler first")
        self.lr_scheduler.step(epoch)

    def get_last_lr(self) -> float:
        if self.lr_scheduler is None:
            raise TrainingError("LR scheduler has not been set", "call set_lr_scheduler first")
        return self.lr_scheduler.get_last_lr()[0]


def create_optim_in_bwd_wrapper(
    model: nn.Module, optim_dict: Mapping[nn.Parameter, torch.optim.Optimizer]
) -> OptimizerInBackwardWrapper:
    """`OptimizerInBackwardWrapper` over ``optim_dict`` (parameter -> optimizer), keyed by parameter name."""
    return OptimizerInBackwardWrapper({name: optim_dict[p] for name, p in model.named_parameters() if p in optim_dict})
