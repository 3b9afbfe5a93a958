"""Several processes through torchrun: process group (NCCL on CUDA, gloo on CPU) and FSDP2.

Each decoder layer and then the root are sharded with ``torch.distributed.fsdp.fully_shard``.
Only rank 0 reads the checkpoint (into host memory); the others receive their shards by
broadcast (see `Trainer._build_sharded_model`).
Parameters keep the training dtype; gradients are reduced in float32 for bf16 runs. Checkpoints
gather a full state dict of the model on rank 0 (HF / PEFT export stays one complete folder).
The training state (trainable parameters, optimizer, step, RNG) is saved sharded by default:
every rank writes its own shards with torch.distributed.checkpoint (`sharded_state` below,
`tuner/checkpoint/sharded.py`), and resume loads them straight into the sharded model and
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

import torch
import torch.distributed as dist
from torch import nn

from tuner.errors import ConfigError


def is_distributed_env() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


class FSDP2:
    """Placement across ranks with FSDP2; see the module docstring."""

    def __init__(self, device: torch.device) -> None:
        if not is_distributed_env():
            raise ConfigError(
                "this recipe runs under torchrun, but RANK/WORLD_SIZE are not set",
                "launch it with `tune run --nproc_per_node N <recipe> --config ...`",
            )
        self.device = device
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            kwargs = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **kwargs)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0

    def shard(self, model: nn.Module, cfg) -> nn.Module:
        from omegaconf import OmegaConf
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        decoder = model.decoder
        param_dtype = next(decoder.parameters()).dtype
        kwargs = {
            "reshard_after_forward": bool(OmegaConf.select(cfg, "fsdp_reshard_after_forward", default=True)),
            "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32),
        }
        if OmegaConf.select(cfg, "fsdp_cpu_offload", default=False):
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=self.device.type == "cuda")
        for layer in decoder.layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every rank takes part; rank 0 gets full CPU tensors, the others an empty dict."""
        out = {}
        for key, value in model.state_dict().items():
            full = value.full_tensor() if hasattr(value, "full_tensor") else value
            if self.is_main:
                out[key] = full.detach().cpu()
            del full
        return out

    def optimizer_state_dict(self, model: nn.Module, optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state_dict(self, model: nn.Module, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def sharded_state(self, model: nn.Module, optimizers) -> dict:
        """``{"model": trainable parameters, "optimizer": state}`` as this rank's DTensor shards (no
        gather), keyed by parameter name; the layout DCP saves and loads in place."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(model, optimizers)
        from tuner.checkpoint.keys import clean_tuner_key

        trainable = {clean_tuner_key(n) for n, p in model.named_parameters() if p.requires_grad}
        return {"model": {k: v for k, v in model_sd.items() if k in trainable}, "optimizer": optim_sd}

    def load_sharded_state(self, model: nn.Module, optimizers, state: dict) -> None:
        """Put a `sharded_state` (filled by DCP) back into the model and optimizer(s); frozen
        parameters (a LoRA base) are left as loaded."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(strict=False))

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
