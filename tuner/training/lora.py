"""What LoRA-family fine-tuning means to the training loop: frozen base, trainable adapters,
optional LoRA+ learning rates, optional Delta-LoRA base updates after each step, and checkpoints
that hold the adapter (PEFT format) plus, unless asked otherwise, the merged model (Delta-LoRA: the
merged model only)."""

from __future__ import annotations

from typing import Any

from torch import nn

from tuner.checkpoint.keys import clean_tuner_key
from tuner.checkpoint.model_state import check_state_dict
from tuner.errors import CheckpointError, ConfigError, note
from tuner.peft import (
    DeltaLoRA,
    delta_lora_layers,
    get_adapter_params,
    get_adapter_state_dict,
    get_merged_lora_ckpt,
    initialize_adapters,
    is_adapter_key,
    load_moved_base,
    lora_config_from_model,
    lora_plus_param_groups,
    set_trainable_params,
)
from tuner.quantization import FP8_BUFFERS, dequantized_state_dict, has_fp8_weight, has_nf4_weight
from tuner.training.settings import LoRASettings
from tuner.training.trainer import FinetuneMethod, Trainer


class LoRAFinetune(FinetuneMethod):
    name = "LoRA"
    settings = LoRASettings

    def may_be_missing(self, model: nn.Module) -> set[str]:
        return {k for k in model.state_dict() if is_adapter_key(k)}

    def after_load(self, trainer: Trainer, model: nn.Module, checkpoint: dict) -> None:
        initialize_adapters(model)  # after the base: DoRA magnitudes and PiSSA factors depend on it
        settings = trainer.method_settings
        if trainer.repaired_tokens and settings.save_adapter_weights_only:
            raise ConfigError(
                f"fix_untrained_tokens repaired {len(trainer.repaired_tokens)} embedding row(s) of the base, which an "
                "adapter alone (save_adapter_weights_only=True) would not carry",
                fix="set save_adapter_weights_only=False (each checkpoint then holds the merged model with the "
                "repaired rows)",
            )
        saved_delta = ((checkpoint.get("training_state") or {}).get("method") or {}).get("delta_lora")
        adapter = checkpoint.get("adapter", saved_delta.get("adapter") if saved_delta is not None else None)
        if adapter is not None:
            expected = {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}
            check_state_dict(
                expected,
                adapter,
                subject="adapter checkpoint",
                cause=_adapter_mismatch_cause(expected, adapter),
                fix="resume with the lora_* settings of the run that saved the adapter, or start a new run "
                "in another output_dir",
            )
            model.load_state_dict({k: v.to(trainer.device) for k, v in adapter.items()}, strict=False)
        if settings.delta_lora_update_ratio is not None and saved_delta is not None and "base" in saved_delta:
            load_moved_base(model, saved_delta["base"])  # a sharded training state brings them back itself

    def before_training(self, trainer: Trainer, model: nn.Module, saved: dict) -> None:
        """Delta-LoRA: its update, over the placed model (sharded or not) with the adapters it starts from."""
        settings = trainer.method_settings
        if "delta_lora" in saved and settings.delta_lora_update_ratio is None:
            raise ConfigError(
                "the checkpoint was trained with Delta-LoRA (its base weights moved), but delta_lora_update_ratio is "
                "not set",
                fix="resume with the delta_lora_update_ratio of the run that saved it",
            )
        if settings.delta_lora_update_ratio is None:
            return
        delta = DeltaLoRA(
            model,
            settings.delta_lora_update_ratio,
            settings.delta_lora_start_step,
            seed=int(trainer.seed),
            shards=trainer.placement,
        )
        trainer.method_state["delta_lora"] = delta
        if trainer.placement.is_main:
            note(
                f"Delta-LoRA: after each optimizer step t > {delta.start_step} (from 0) the base weights of "
                f"{len(delta.layers)} adapted layers move by {delta.update_ratio} x alpha/r x the change of B A; "
                "checkpoints hold the merged model"
            )

    def set_trainable(self, trainer: Trainer, model: nn.Module) -> None:
        if trainer.method_settings.delta_lora_update_ratio is not None:
            delta_lora_layers(model)  # refuse what Delta-LoRA cannot update before any weight is read
            if getattr(trainer.placement, "cpu_offload", False):
                raise ConfigError(
                    "Delta-LoRA updates the sharded base weights on the GPU after each step, which fsdp_cpu_offload "
                    "keeps on the CPU",
                    fix="set fsdp_cpu_offload: False, or delta_lora_update_ratio: null",
                )
        set_trainable_params(model, get_adapter_params(model))

    def moved_frozen_params(self, trainer: Trainer, model: nn.Module) -> list[nn.Parameter]:
        """Delta-LoRA's base weights (asked before its update exists: on resume, to load them)."""
        if trainer.method_settings.delta_lora_update_ratio is None:
            return []
        return [m.weight for m in delta_lora_layers(model).values()]

    def after_optimizer_step(self, trainer: Trainer, model: nn.Module, step_index: int) -> None:
        delta = trainer.method_state.get("delta_lora")
        if delta is not None:
            delta.after_step(step_index)

    def training_state(self, trainer: Trainer, model: nn.Module) -> dict:
        """Delta-LoRA: the moved base weights and the adapter (its checkpoints hold only the merged
        model), gathered on the main rank; in a sharded training state they are among its shards
        (`moved_frozen_params`), so only the flag is kept here."""
        delta = trainer.method_state.get("delta_lora")
        if delta is None:
            return {}
        if trainer.placement.saves_sharded_state(trainer.checkpointer):
            return {"delta_lora": {"in_sharded_state": True}}
        base_keys = {clean_tuner_key(f"{name}.weight") for name in delta.layers}
        adapter_keys = {k for k in model.state_dict() if is_adapter_key(k)}
        full = trainer.placement.full_state_dict(model, keys=base_keys | adapter_keys)
        base = {k: v for k, v in full.items() if k in base_keys}
        return {"delta_lora": {"base": base, "adapter": get_adapter_state_dict(full)}}

    def param_groups(self, trainer: Trainer, model: nn.Module) -> list[Any]:
        ratio = trainer.method_settings.lora_plus_ratio
        if ratio is None:
            return super().param_groups(trainer, model)

        return lora_plus_param_groups(model, lr=float(trainer.cfg.optimizer.lr), lora_plus_ratio=ratio)

    def checkpoint_state(self, trainer: Trainer, model: nn.Module, final: bool) -> dict:
        full = trainer.placement.full_state_dict(model)
        config = lora_config_from_model(model)  # the settings the modules were built with
        delta_lora = "delta_lora" in trainer.method_state
        # Delta-LoRA moved the base: an adapter over the original base is not the trained model, so the
        # checkpoint is the merged model alone (the adapter for resume is in the training state).
        state: dict[str, Any] = {}
        if not delta_lora:
            state.update(adapter=get_adapter_state_dict(full), adapter_config=config)
        if (delta_lora or not trainer.method_settings.save_adapter_weights_only) and full:
            state["model"] = get_merged_lora_ckpt(
                _with_dense_base(model, full, trainer.checkpointer),
                rank=config["lora_rank"],
                alpha=config.get("lora_alpha"),
                use_rslora=bool(config.get("use_rslora")),
            )
        return state


def _adapter_mismatch_cause(expected: dict, saved: dict) -> str:
    """What differs between the adapter the model was built with and the saved one, in config words."""
    for key, value in saved.items():
        if key.endswith("lora_a.weight") and key in expected and tuple(value.shape) != tuple(expected[key].shape):
            return (
                f"the adapter was trained with lora_rank={value.shape[0]}; this run builds "
                f"lora_rank={expected[key].shape[0]}"
            )
    if set(saved) - set(expected):
        return (
            "the adapter covers modules this run does not adapt (lora_attn_modules / apply_lora_to_mlp / "
            "apply_lora_to_output differ)"
        )
    if set(expected) - set(saved):
        return "this run adapts modules the saved adapter does not cover, or uses another variant (use_dora, use_vera)"
    return "the adapter settings differ from the run that saved it"


def _with_dense_base(model: nn.Module, state_dict: dict, checkpointer: Any) -> dict:
    """``state_dict`` with every quantized base weight back as a dense ``weight``, so the adapters
    can be merged and the model saved in the input format: an FP8 base (``base_dtype: fp8``) is
    read again from the original checkpoint (merging into the FP8-rounded weights would lose the
    base's precision), an NF4 base (QLoRA) is dequantized, as PEFT merges into a 4-bit base."""
    if any(has_fp8_weight(m) for m in model.modules()):
        return _with_original_base(state_dict, checkpointer)
    if not any(has_nf4_weight(m) for m in model.modules()):
        return state_dict
    dense = dequantized_state_dict(model, device="cpu")
    out = {k: v for k, v in state_dict.items() if k in dense}  # drops the NF4 payload keys
    out.update({k: v for k, v in dense.items() if k not in state_dict})  # the dequantized weights
    return out


def _with_original_base(state_dict: dict, checkpointer: Any) -> dict:
    """``state_dict`` with each FP8 base (``<prefix>weight_fp8`` + scale) replaced by ``<prefix>weight``
    read from the checkpointer's original weight files, one file at a time, in their dtype."""
    wanted = {k[: -len("_fp8")] for k in state_dict if k.endswith("weight_fp8")}
    dense: dict = {}
    for shard in checkpointer.iter_model_shards():
        dense.update({k: v.to("cpu") for k, v in shard.items() if k in wanted})
    missing = sorted(wanted - set(dense))
    if missing:
        raise CheckpointError(
            f"the original checkpoint has no dense base weight for {len(missing)} FP8 layer(s) {missing[:3]}",
            fix="keep the base checkpoint in checkpointer.checkpoint_dir, or set save_adapter_weights_only: True",
        )
    out = {k: v for k, v in state_dict.items() if not k.endswith(FP8_BUFFERS)}
    out.update(dense)
    return out
