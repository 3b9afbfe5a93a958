"""The top-level keys of the fine-tuning recipes, with their types, ranges and defaults.

`TrainingSettings` is what every fine-tuning recipe reads; a method adds its own keys
(`LoRASettings`). `tune validate` and the trainer check a config against the same classes (see
`tuner.config.settings`), so both reject the same configs, each problem naming its dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tuner.config.settings import Spec, component, node, setting
from tuner.devices import CONFIG_DTYPES


@dataclass(frozen=True)
class TrainingSettings:
    """Keys of every fine-tuning recipe (full and LoRA, one device or several)."""

    output_dir: str = setting(kind=str, doc="where checkpoints and logs go")
    model: Any = component(required=True)
    tokenizer: Any = component(required=True)
    checkpointer: Any = component(required=True)
    dataset: Any = component(required=True)
    optimizer: Any = component(required=True)
    dataset_val: Any = component()
    lr_scheduler: Any = component()
    loss: Any = component()
    metric_logger: Any = component()
    profiler: Any = node()
    collate_fn: Any = node()
    sample_generation: Any = node(doc="{prompts: [...], max_new_tokens, system}: answers printed before and after")

    resume_from_checkpoint: Any = setting(False, kind=(bool, str))
    seed: int | None = setting(None, int)
    shuffle: bool = setting(True, bool)
    batch_size: int = setting(1, int, min=1)
    epochs: int = setting(1, int, min=1)
    max_steps_per_epoch: int | None = setting(None, int, min=1)
    gradient_accumulation_steps: int = setting(1, int, min=1)
    clip_grad_norm: float | None = setting(None, float, min=0, min_exclusive=True)
    optimizer_in_bwd: bool = setting(False, bool)
    save_every_n_steps: int | None = setting(None, int, min=1)
    run_val_every_n_steps: int | None = setting(None, int, min=1)
    max_validation_steps: int | None = setting(None, int, min=1)
    log_every_n_steps: int = setting(1, int, min=1)
    log_peak_memory_stats: bool = setting(True, bool)
    progress_bar: bool = setting(True, bool)
    num_workers: int = setting(0, int, min=0)
    device: str | None = setting(None, str)
    dtype: str = setting("bf16", str, choices=CONFIG_DTYPES)
    compile: bool = setting(False, bool)
    enable_activation_checkpointing: bool = setting(False, bool)
    ac_mode: str | None = setting(None, str, choices=("selective", "full"))
    ac_option: int | None = setting(None, int, min=1)
    enable_activation_offloading: bool = setting(False, bool)
    nf4_keep_dense_for_backward: bool = setting(False, bool)
    mlp_chunk_size: int | None = setting(
        None, int, min=1, doc="compute each MLP over chunks of this many tokens, keeping none of its activations"
    )
    fsdp_cpu_offload: bool = setting(False, bool)
    fsdp_reshard_after_forward: bool = setting(True, bool)
    fix_untrained_tokens: bool = setting(
        False, bool, doc="set (near-)zero embedding/output rows of the chat template's tokens to the mean row"
    )

    def problems(self) -> list[str]:
        """What is wrong with a combination of keys (each key is fine on its own)."""
        out = []
        if self.optimizer_in_bwd and self.gradient_accumulation_steps != 1:
            out.append(
                f"optimizer_in_bwd=True needs gradient_accumulation_steps=1 (got {self.gradient_accumulation_steps}): "
                "each gradient is applied as soon as it is computed"
            )
        if self.optimizer_in_bwd and self.clip_grad_norm is not None:
            out.append(
                "optimizer_in_bwd=True cannot clip gradients (each is applied as it is computed); set "
                "clip_grad_norm=null"
            )
        if self.optimizer_in_bwd and self.dtype in ("fp16", "float16"):
            out.append("dtype=fp16 (a gradient scaler) does not work with optimizer_in_bwd=True; use bf16 or fp32")
        if self.mlp_chunk_size is not None and self.compile:
            out.append(
                f"mlp_chunk_size={self.mlp_chunk_size} (the sequence-tiled MLP) runs eagerly; set compile=False, "
                "or mlp_chunk_size=null to compile"
            )
        if self.ac_mode == "selective" and self.ac_option is None:
            out.append("ac_mode=selective needs ac_option=N (checkpoint every N-th layer), e.g. ac_option=2")
        return out

    @property
    def checkpoint_every(self) -> int | None:
        """Every how many decoder layers activations are checkpointed (None: none), from
        ``enable_activation_checkpointing``, ``ac_mode`` (full | selective, as torchtune's distributed
        recipes read it) and ``ac_option`` (selective's N)."""
        if self.ac_mode == "selective":
            return self.ac_option
        return 1 if self.ac_mode == "full" or self.enable_activation_checkpointing else None

    #: Scalars inside component nodes that the loop relies on.
    ARGUMENTS: ClassVar[dict[str, Spec]] = {
        "optimizer.lr": Spec(float, min=0),
        "optimizer.betas": Spec("pair", min=0, max=1, max_exclusive=True),
        "optimizer.eps": Spec(float, min=0, min_exclusive=True),
        "optimizer.weight_decay": Spec(float, min=0),
        "optimizer.momentum": Spec(float, min=0),
        "lr_scheduler.num_warmup_steps": Spec(int, min=0),
        "loss.num_output_chunks": Spec(int, min=1),
        "tokenizer.max_seq_len": Spec(int, min=1, nullable=True),
        "checkpointer.keep_last_n_checkpoints": Spec(int, min=1, nullable=True),
    }


@dataclass(frozen=True)
class ShardedTrainingSettings(TrainingSettings):
    """`TrainingSettings` as the FSDP2 recipes read them: the same keys, one more combination refused."""

    def problems(self) -> list[str]:
        out = super().problems()
        if self.enable_activation_offloading and self.checkpoint_every is not None:
            out.append(
                "enable_activation_offloading=True with activation checkpointing offloads each checkpointed "
                "layer's input (a nested backward per layer), which FSDP2's sharded gradients do not support; "
                "on several GPUs set enable_activation_offloading=False (sharding already divides the memory), "
                "or train on one GPU with the single-device recipe"
            )
        return out

    ARGUMENTS: ClassVar[dict[str, Spec]] = {
        **TrainingSettings.ARGUMENTS,
        "model.fp8_output": Spec(
            bool,
            choices=(False,),
            fix="FSDP2 shards the output projection, and its FP8 copy needs it whole; drop model.fp8_output "
            "with the distributed recipes (the single-device ones take it)",
        ),
    }


@dataclass(frozen=True)
class FullSettings:
    """Full fine-tuning adds no keys of its own."""


@dataclass(frozen=True)
class LoRASettings:
    """Keys of the LoRA-family recipes, on top of `TrainingSettings`."""

    save_adapter_weights_only: bool = setting(False, bool, doc="save only the adapter, not the merged model")
    lora_plus_ratio: float | None = setting(None, float, min=0, min_exclusive=True, doc="LoRA+: lr of B / lr of A")
    delta_lora_update_ratio: float | None = setting(
        None, float, min=0, min_exclusive=True, doc="Delta-LoRA's lambda: W moves by lambda * s * (change of B A)"
    )
    delta_lora_start_step: int = setting(0, int, min=0, doc="Delta-LoRA's K: W moves after optimizer steps t > K")

    def problems(self) -> list[str]:
        """What is wrong with a combination of keys (each key is fine on its own)."""
        if self.delta_lora_update_ratio is not None and self.save_adapter_weights_only:
            return [
                "delta_lora_update_ratio is set with save_adapter_weights_only=True: Delta-LoRA also changes the base "
                "weights, so an adapter alone is not the trained model; set save_adapter_weights_only=False (each "
                "checkpoint is then the full merged model)"
            ]
        return []

    ARGUMENTS: ClassVar[dict[str, Spec]] = {
        "model.lora_rank": Spec(int, min=1),
        "model.lora_alpha": Spec(float, min=0, min_exclusive=True),
        "model.lora_dropout": Spec(float, min=0, max=1, max_exclusive=True),
        "model.vera_d_initial": Spec(float, min=0, min_exclusive=True),
    }


@dataclass(frozen=True)
class LoRADPOSettings(LoRASettings):
    """LoRA DPO's keys: LoRA's, less Delta-LoRA (its reference is the base with the adapters off)."""

    def problems(self) -> list[str]:
        if self.delta_lora_update_ratio is not None:
            return [
                "delta_lora_update_ratio is set for LoRA DPO: Delta-LoRA moves the base weights, and LoRA DPO's "
                "reference model is that base with the adapters off, so the reference would drift with training; "
                "remove delta_lora_update_ratio (or use full DPO, whose reference is a frozen copy)"
            ]
        return super().problems()


@dataclass(frozen=True)
class DPOSettings:
    """Keys of full DPO (`tuner.training.dpo.FullDPO`), on top of `TrainingSettings`."""

    ref_checkpointer: Any = component(doc="the frozen reference's weights (default: the checkpointer's base weights)")
