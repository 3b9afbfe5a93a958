"""Learning-rate schedules with linear warm-up (names and arguments as in torchtune / HF)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5, last_epoch: int = -1
) -> LambdaLR:
    """Linear warm-up to the base lr, then cosine decay to 0 over the remaining steps."""

    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    return LambdaLR(optimizer, factor, last_epoch)


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """Linear warm-up to the base lr, then linear decay to 0 at ``num_training_steps``."""

    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))

    return LambdaLR(optimizer, factor, last_epoch)


def get_constant_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int = 0, num_training_steps: int | None = None, last_epoch: int = -1
) -> LambdaLR:
    """Linear warm-up to the base lr, then constant (``num_training_steps`` is accepted and unused)."""

    def factor(step: int) -> float:
        return min(1.0, step / max(1, num_warmup_steps)) if num_warmup_steps else 1.0

    return LambdaLR(optimizer, factor, last_epoch)


def get_lr(optimizer) -> float:
    """The learning rate of the optimizer's first parameter group (what recipes log), also for an
    optimizer-in-backward wrapper."""
    if hasattr(optimizer, "get_optim_key"):
        return optimizer.get_optim_key("lr")
    return optimizer.param_groups[0]["lr"]
