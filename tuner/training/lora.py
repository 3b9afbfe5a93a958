"""What LoRA-family fine-tuning means to the training loop: frozen base, trainable adapters,
optional LoRA+ learning rates, and checkpoints that hold the adapter (PEFT format) plus,
unless asked otherwise, the merged model."""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from torch import nn

from tuner.errors import CheckpointError
from tuner.training.trainer import FinetuneMethod, Trainer

# The model-builder keys that describe the adapter (saved into adapter_config.json).
ADAPTER_CONFIG_KEYS = (
    "lora_attn_modules", "apply_lora_to_mlp", "apply_lora_to_output", "lora_rank", "lora_alpha",
    "lora_dropout", "use_dora", "use_rslora", "lora_fa", "init_lora_weights", "use_vera",
    "vera_d_initial", "projection_prng_key", "quantize_base",
)


class LoRAFinetune(FinetuneMethod):
    name = "LoRA"

    def may_be_missing(self, model: nn.Module) -> set[str]:
        from tuner.peft import is_adapter_key

        return {k for k in model.state_dict() if is_adapter_key(k)}

    def after_load(self, trainer: Trainer, model: nn.Module, checkpoint: dict) -> None:
        from tuner.peft import initialize_adapters, is_adapter_key

        initialize_adapters(model)  # after the base: DoRA magnitudes and PiSSA factors depend on it
        if "adapter" in checkpoint:
            adapter = checkpoint["adapter"]
            expected = {k for k in model.state_dict() if is_adapter_key(k)}
            missing, unexpected = sorted(expected - set(adapter)), sorted(set(adapter) - expected)
            if missing or unexpected:
                raise CheckpointError(
                    f"the adapter checkpoint does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}",
                    "use the same lora_* settings as the run that saved it",
                )
            model.load_state_dict({k: v.to(trainer.device) for k, v in adapter.items()}, strict=False)

    def set_trainable(self, trainer: Trainer, model: nn.Module) -> None:
        from tuner.peft import get_adapter_params, set_trainable_params

        set_trainable_params(model, get_adapter_params(model))

    def param_groups(self, trainer: Trainer, model: nn.Module) -> list[Any]:
        ratio = OmegaConf.select(trainer.cfg, "lora_plus_ratio", default=None)
        if ratio is None:
            return super().param_groups(trainer, model)
        from tuner.peft import lora_plus_param_groups

        return lora_plus_param_groups(model, lr=float(trainer.cfg.optimizer.lr), lora_plus_ratio=float(ratio))

    def adapter_config(self, trainer: Trainer) -> dict:
        model_cfg = OmegaConf.to_container(trainer.cfg.model, resolve=True)
        return {k: model_cfg[k] for k in ADAPTER_CONFIG_KEYS if k in model_cfg}

    def checkpoint_state(self, trainer: Trainer, model: nn.Module, final: bool) -> dict:
        from tuner.peft import get_adapter_state_dict, get_merged_lora_ckpt

        full = trainer.placement.full_state_dict(model)
        state: dict[str, Any] = {"adapter": get_adapter_state_dict(full), "adapter_config": self.adapter_config(trainer)}
        if not OmegaConf.select(trainer.cfg, "save_adapter_weights_only", default=False) and full:
            cfg = state["adapter_config"]
            state["model"] = get_merged_lora_ckpt(
                _with_dense_base(model, full), rank=int(cfg.get("lora_rank", 8)), alpha=float(cfg.get("lora_alpha", 16)),
                use_rslora=bool(cfg.get("use_rslora", False)),
            )
        return state


def _with_dense_base(model: nn.Module, state_dict: dict) -> dict:
    """``state_dict`` with every NF4 base weight (QLoRA) dequantized back under its dense ``weight``
    key, so the adapters can be merged and the model saved in the input format."""
    from tuner.quantization import dequantized_state_dict, has_nf4_weight

    if not any(has_nf4_weight(m) for m in model.modules()):
        return state_dict
    dense = dequantized_state_dict(model, device="cpu")
    out = {k: v for k, v in state_dict.items() if k in dense}  # drops the NF4 payload keys
    out.update({k: v for k, v in dense.items() if k not in state_dict})  # the dequantized weights
    return out
