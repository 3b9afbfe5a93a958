"""What LoRA-family fine-tuning means to the training loop: frozen base, trainable adapters,
optional LoRA+ learning rates, and checkpoints that hold the adapter (PEFT format) plus,
unless asked otherwise, the merged model."""

from __future__ import annotations

from typing import Any

from torch import nn

from tuner.checkpoint.model_state import check_state_dict
from tuner.errors import CheckpointError
from tuner.peft import (
    get_adapter_params,
    get_adapter_state_dict,
    get_merged_lora_ckpt,
    initialize_adapters,
    is_adapter_key,
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
        if "adapter" in checkpoint:
            adapter = checkpoint["adapter"]
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

    def set_trainable(self, trainer: Trainer, model: nn.Module) -> None:
        set_trainable_params(model, get_adapter_params(model))

    def param_groups(self, trainer: Trainer, model: nn.Module) -> list[Any]:
        ratio = trainer.method_settings.lora_plus_ratio
        if ratio is None:
            return super().param_groups(trainer, model)

        return lora_plus_param_groups(model, lr=float(trainer.cfg.optimizer.lr), lora_plus_ratio=ratio)

    def checkpoint_state(self, trainer: Trainer, model: nn.Module, final: bool) -> dict:
        full = trainer.placement.full_state_dict(model)
        config = lora_config_from_model(model)  # the settings the modules were built with
        state: dict[str, Any] = {"adapter": get_adapter_state_dict(full), "adapter_config": config}
        if not trainer.method_settings.save_adapter_weights_only and full:
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
