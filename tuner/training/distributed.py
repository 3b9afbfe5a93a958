"""The FSDP2 placement: several processes through torchrun, process group (NCCL on CUDA, gloo on
CPU), each decoder layer and then the root sharded with ``torch.distributed.fsdp.fully_shard``.

Only rank 0 reads the checkpoint (into host memory); the others receive their shards by
broadcast (`FSDP2.build_model`). Parameters keep the training dtype; gradients are reduced in
float32 for bf16 runs. Checkpoints gather a full state dict of the model on rank 0 (HF / PEFT
export stays one complete folder). The training state (trainable parameters, optimizer, step, RNG)
is saved sharded by default: every rank writes its own shards with torch.distributed.checkpoint
(`tuner/checkpoint/sharded.py`), and resume loads them straight into the sharded model and
optimizer, on the same number of ranks. With ``checkpointer.sharded_state: False`` the optimizer
state is gathered to full tensors on rank 0 into ``training_state.pt`` instead (slow for large
models, but resumable on any number of ranks or on one device).

QLoRA: the NF4 base lives in module buffers, which FSDP2 does not shard: every rank holds the
whole NF4 base (~0.53 bytes per parameter: about 37 GB for 70B) and only the adapters, their
gradients and optimizer states are sharded.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Collection

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard

from tuner.checkpoint.keys import clean_tuner_key
from tuner.checkpoint.sharded import SHARDED_STATE_DIR, blob, load_sharded_state, save_sharded_state, unblob
from tuner.devices import get_device
from tuner.errors import ConfigError, TrainingError
from tuner.training.optim import OptimizerInBackward
from tuner.training.placement import ModelParts, Placement, Resumed, TrainingState
from tuner.training.settings import ShardedTrainingSettings


def is_distributed_env() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


class FSDP2(Placement):
    """Placement across ranks with FSDP2; see the module docstring."""

    whole_model = False
    #: Refuses activation offloading with checkpointing: the offloaded checkpoints accumulate
    #: parameter gradients in a nested backward, which FSDP2's per-layer gradient reduction does not follow.
    settings = ShardedTrainingSettings

    def __init__(self, device: torch.device, reshard_after_forward: bool = True, cpu_offload: bool = False) -> None:
        if not is_distributed_env():
            raise ConfigError(
                "this recipe runs under torchrun, but RANK/WORLD_SIZE are not set",
                "launch it with `tune run --nproc_per_node N <recipe> --config ...`",
            )
        super().__init__(device)
        self.reshard_after_forward = bool(reshard_after_forward)
        self.cpu_offload = bool(cpu_offload)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            kwargs = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **kwargs)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0

    @classmethod
    def from_settings(cls, settings: Any) -> "FSDP2":
        """This rank's device, and the ``fsdp_reshard_after_forward`` / ``fsdp_cpu_offload`` keys."""
        return cls(
            get_device(settings.device),
            reshard_after_forward=settings.fsdp_reshard_after_forward,
            cpu_offload=settings.fsdp_cpu_offload,
        )

    # ------------------------------------------------------------------ model
    def build_model(self, parts: ModelParts, checkpointer: Any) -> tuple[nn.Module, dict]:
        """Only rank 0 reads the weights (into host memory); every rank shards an empty model and
        receives its shards of rank 0's weights by broadcast, so no rank ever holds the whole model
        on its GPU. Resuming from a sharded state that holds every weight (a full fine-tune) reads
        no weight file at all: `load_training_state` fills the shards."""
        resume = self.check_resume(checkpointer)
        decoder = parts.build()
        model = self._shard(parts.prepare(decoder))
        weights_in_state = resume is not None and set(decoder.state_dict()) == _trainable_names(decoder)
        if self.is_main and not weights_in_state:
            full = parts.build()
            checkpoint = parts.fill(full, torch.device("cpu"))
            state = {f"decoder.{k}": v for k, v in full.state_dict().items()}
            del full
        else:
            checkpoint = checkpointer.load_checkpoint(weights=False)
            state = {}
        model.to_empty(device=self.device)
        if not weights_in_state:
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_model_state_dict(model, state, options=options)
        if hasattr(decoder, "rope_init"):
            decoder.rope_init()  # non-persistent rotary tables are not broadcast
        return model, checkpoint

    def _shard(self, model: nn.Module) -> nn.Module:
        decoder = model.decoder
        param_dtype = next(decoder.parameters()).dtype
        kwargs: dict[str, Any] = {
            "reshard_after_forward": self.reshard_after_forward,
            "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32),
        }
        if self.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=self.device.type == "cuda")
        for layer in decoder.layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model

    # ----------------------------------------------------------- across ranks
    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to_local() if isinstance(tensor, DTensor) else tensor

    def local_rows(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A DTensor sharded by rows (FSDP2's ``Shard(0)``; the last ranks' shards may be shorter or
        empty): its local rows, a view FSDP2 gathers from, and the index of the first."""
        if not isinstance(tensor, DTensor):
            return tensor, 0
        if tuple(tensor.placements) != (Shard(0),):
            raise TrainingError(
                f"expected a parameter sharded by rows (Shard(0)), got placements {tuple(tensor.placements)}",
                fix="shard with fully_shard's default (dim 0)",
            )
        (chunk,) = tensor.__create_chunk_list__()  # this rank's offsets, as torch.distributed.checkpoint reads them
        return tensor.to_local(), int(chunk.offsets[0])

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        norm = super().clip_grad_norm(params, max_norm)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def full_state_dict(self, model: nn.Module, keys: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Every rank takes part; rank 0 gets full CPU tensors, the others an empty dict."""
        out = {}
        for key, value in model.state_dict().items():
            if keys is not None and key not in keys:
                continue
            full = value.full_tensor() if isinstance(value, DTensor) else value
            if self.is_main:
                out[key] = full.detach().cpu()
            del full
        return out

    def _broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    # -------------------------------------------------------- training state
    def saves_sharded_state(self, checkpointer: Any) -> bool:
        return self.world_size > 1 and bool(getattr(checkpointer, "sharded_state", False))

    def optimizer_state_dict(self, model: nn.Module, optimizer: Any) -> dict:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, _torch_optimizers(optimizer), options=options)

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: Any, state: dict) -> None:
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, _torch_optimizers(optimizer), state, options=options)

    def save_checkpoint(
        self, checkpointer: Any, state: dict, training: TrainingState, *, step: int, epoch: int, adapter_only: bool
    ) -> None:
        """Several ranks write the training state sharded (unless ``checkpointer.sharded_state`` is
        False: then gathered, as the base class does): each rank writes its shards into the step's
        temporary folder, then rank 0 writes the exported model and the manifest."""
        if not self.saves_sharded_state(checkpointer):
            super().save_checkpoint(checkpointer, state, training, step=step, epoch=epoch, adapter_only=adapter_only)
            return
        state["sharded_state"] = {
            "dir": SHARDED_STATE_DIR,
            "world_size": self.world_size,
            "format": "torch.distributed.checkpoint",
        }
        if self.is_main:
            checkpointer.save_checkpoint(
                state,
                step=step,
                epoch=epoch,
                adapter_only=adapter_only,
                write_extra=lambda tmp: self._save_sharded_state(tmp, training),
            )
        else:
            self._save_sharded_state(None, training)
        self.barrier()

    def _save_sharded_state(self, tmp: Path | None, training: TrainingState) -> None:
        """All ranks: write this rank's shards of the training state into rank 0's temporary step
        folder ``tmp`` (rank 0 passes it, the others receive it), then wait for every rank."""
        folder = Path(self._broadcast_object(None if tmp is None else str(tmp)))
        state = self._sharded_state(training)
        state["trainer"] = blob(training.loop)
        state["ranks"] = {f"rank_{self.rank}": blob(training.rank)}
        save_sharded_state(folder / SHARDED_STATE_DIR, state)
        self.barrier()

    def load_training_state(self, checkpointer: Any, checkpoint: dict, training: TrainingState) -> Resumed | None:
        """A sharded training state loads straight into the sharded model (trainable parameters)
        and optimizer; the loop's position and this rank's RNG come back as plain data."""
        info = getattr(checkpointer, "resume_sharded_state", None)
        if info is None:
            return super().load_training_state(checkpointer, checkpoint, training)
        rank_key = f"rank_{self.rank}"
        state = self._sharded_state(training)
        state["trainer"] = None  # placeholders: filled from the checkpoint
        state["ranks"] = {rank_key: None}
        load_sharded_state(info["path"], state)
        # Frozen parameters (a LoRA base) are left as loaded, but for those the method moves (`TrainingState.moved`).
        set_state_dict(
            training.model,
            _torch_optimizers(training.optimizer),
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(strict=False),
        )
        loop, rank = unblob(state["trainer"], "trainer"), unblob(state["ranks"][rank_key], rank_key)
        return Resumed({**loop, **rank}, source=f"sharded training state of {self.world_size} ranks")

    def _sharded_state(self, training: TrainingState) -> dict:
        """``{"model": trainable parameters and the frozen ones the method moves, "optimizer": state}``
        as this rank's DTensor shards (no gather), keyed by parameter name; the layout DCP saves and
        loads in place."""
        model_sd, optim_sd = get_state_dict(training.model, _torch_optimizers(training.optimizer))
        moved = {id(p) for p in training.moved}
        names = _trainable_names(training.model) | {
            clean_tuner_key(n) for n, p in training.model.named_parameters() if id(p) in moved
        }
        return {"model": {k: v for k, v in model_sd.items() if k in names}, "optimizer": optim_sd}

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _trainable_names(model: nn.Module) -> set[str]:
    """State-dict names of ``model``'s trainable parameters (wrapper prefixes removed)."""
    return {clean_tuner_key(n) for n, p in model.named_parameters() if p.requires_grad}


def _torch_optimizers(optimizer: Any) -> Any:
    """What torch's distributed state-dict functions take: the optimizer, or optimizer-in-backward's
    per-parameter optimizers."""
    return list(optimizer.optimizers.values()) if isinstance(optimizer, OptimizerInBackward) else optimizer
