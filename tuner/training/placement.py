"""Where the model lives: one device (`SingleDevice`) or sharded across ranks (`distributed.FSDP2`).

The trainer asks its placement for everything that differs between one process and many, and
never branches on the number of ranks itself. The interface (`Placement`):

- ``build_model(parts, checkpointer)``: build the model, fill it with the checkpoint's weights and
  place it; returns the module to train and the rest of the checkpoint (adapter, training state);
- ``all_reduce_sum``, ``all_finite``, ``clip_grad_norm``: numbers over every rank;
- ``local_rows``, ``full_tensor``: this rank's rows of a parameter and the whole of it (`tuner.peft.RowShards`,
  for Delta-LoRA's update of the sharded base);
- ``full_state_dict(model, keys=None)``: the whole model (or some entries) on the CPU (on the main rank), to export;
- ``save_checkpoint(checkpointer, state, training, ...)`` / ``load_training_state(...)``: a checkpoint
  with its training state (whole in ``training_state.pt``, or each rank's shards: ``saves_sharded_state``);
- ``rank``, ``world_size``, ``is_main``, ``whole_model``, ``device``; ``close()``.

A recipe says which placement it runs with: ``Trainer(cfg, METHOD, placement=FSDP2)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable

import torch
from torch import nn

from tuner.checkpoint.sharded import check_world_size
from tuner.devices import get_device
from tuner.training.settings import TrainingSettings


@dataclass(frozen=True)
class ModelParts:
    """How the trainer's model is made; the placement decides where each part runs and in which order."""

    #: A fresh decoder on the meta device.
    build: Callable[[], nn.Module]
    #: Fill a meta-built decoder on a device and finish it (adapters); returns the rest of the checkpoint.
    fill: Callable[[nn.Module, torch.device], dict]
    #: Trainable parameters, memory features, loss: the module the loop trains (the decoder is its ``.decoder``).
    prepare: Callable[[nn.Module], nn.Module]


@dataclass
class TrainingState:
    """What a checkpoint's training state is made of, as the trainer hands it to the placement."""

    model: nn.Module  # the module `build_model` returned
    optimizer: Any
    loop: dict = field(default_factory=dict)  # where the loop is (the same on every rank)
    rank: dict = field(default_factory=dict)  # what differs between ranks: RNG states, the gradient scaler
    #: Frozen parameters the method changes (Delta-LoRA's base weights): a sharded training state
    #: keeps them with the trainable ones (a whole one holds them in the loop's ``method`` entry).
    moved: list = field(default_factory=list)


@dataclass(frozen=True)
class Resumed:
    """A training state read back: ``state`` is the loop's and this rank's plain data (the
    optimizer is loaded already); ``source`` says what it was read from, for the log."""

    state: dict
    source: str = ""


class Placement:
    """The interface; see the module docstring. The base class keeps the training state whole
    (``training_state.pt``, the optimizer state gathered), which both placements can do."""

    rank = 0
    world_size = 1
    is_main = True
    #: The top-level settings a recipe with this placement reads (`tune validate` checks the same).
    settings: type = TrainingSettings
    #: Whether this process holds every weight (the before/after sample generates with it).
    whole_model = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @classmethod
    def from_settings(cls, settings: Any) -> "Placement":
        """The placement for a run's `TrainingSettings` (``device``, and the placement's own keys)."""
        return cls(get_device(settings.device))

    # ------------------------------------------------------------------ model
    def build_model(self, parts: ModelParts, checkpointer: Any) -> tuple[nn.Module, dict]:
        raise NotImplementedError

    def check_resume(self, checkpointer: Any) -> dict[str, Any] | None:
        """The sharded training state the checkpointer resumes from (None: none), after checking
        that this run has as many ranks as wrote it (before any weight is read: fail fast)."""
        info = getattr(checkpointer, "resume_sharded_state", None)
        if info is not None:
            check_world_size(info, self.world_size, info["step_dir"])
        return info

    # ----------------------------------------------------------- across ranks
    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's part of ``tensor``."""
        return tensor

    def local_rows(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This rank's rows of ``tensor`` (updatable in place) and the index of the first."""
        return tensor, 0

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """The whole ``tensor`` (every rank calls it)."""
        return tensor

    def all_finite(self, tensors: Iterable[torch.Tensor]) -> bool:
        """Whether every element of ``tensors`` is finite, on every rank (one sync)."""
        flags = [torch.isfinite(self.local(t)).all() for t in tensors]
        bad = (~torch.stack(flags)).sum() if flags else torch.zeros((), device=self.device)
        return not self.all_reduce_sum(bad.to(self.device, torch.long)).item()

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip the gradients of ``params`` to a total norm of ``max_norm``; the norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)

    def full_state_dict(self, model: nn.Module, keys: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """The model's state dict (only ``keys``, when given) on the CPU, ready to merge and save."""
        return {k: v.detach().cpu() for k, v in model.state_dict().items() if keys is None or k in keys}

    def barrier(self) -> None:
        pass

    # -------------------------------------------------------- training state
    def saves_sharded_state(self, checkpointer: Any) -> bool:
        """Whether `save_checkpoint` writes each rank's shards (else one whole ``training_state.pt``)."""
        return False

    def optimizer_state_dict(self, model: nn.Module, optimizer: Any) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: Any, state: dict) -> None:
        optimizer.load_state_dict(state)

    def save_checkpoint(
        self, checkpointer: Any, state: dict, training: TrainingState, *, step: int, epoch: int, adapter_only: bool
    ) -> None:
        """Every rank calls this: ``state`` (the weights part) plus the training state as
        ``training_state.pt``, written by the main rank; returns when the step is complete."""
        optimizer = self.optimizer_state_dict(training.model, training.optimizer)
        state["training_state"] = {**training.loop, **training.rank, "optimizer": optimizer}
        if self.is_main:
            checkpointer.save_checkpoint(state, step=step, epoch=epoch, adapter_only=adapter_only)
        self.barrier()

    def load_training_state(self, checkpointer: Any, checkpoint: dict, training: TrainingState) -> Resumed | None:
        """Every rank calls this once the optimizer exists: load the optimizer state, return the rest
        (None when the run does not resume)."""
        state = checkpoint.get("training_state")
        if state is None:
            return None
        self.load_optimizer_state_dict(training.model, training.optimizer, state["optimizer"])
        return Resumed(state)

    def close(self) -> None:
        pass


class SingleDevice(Placement):
    """Everything on one device, one process."""

    def build_model(self, parts: ModelParts, checkpointer: Any) -> tuple[nn.Module, dict]:
        """Build on meta, fill on the device (one weight file at a time), then prepare."""
        self.check_resume(checkpointer)
        decoder = parts.build()
        checkpoint = parts.fill(decoder, self.device)
        return parts.prepare(decoder), checkpoint
