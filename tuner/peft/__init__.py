"""LoRA family adapters: layers, `apply_lora`, adapter utilities.

Adapter files in HF PEFT's format are a checkpoint format: `tuner.checkpoint.peft_format`.
"""

from tuner.peft.apply import LORA_ATTN_MODULES, LORA_MLP_MODULES, apply_lora, initialize_adapters
from tuner.peft.base import AdapterModule
from tuner.peft.delta_lora import DeltaLoRA, RowShards, delta_lora_layers, load_moved_base
from tuner.peft.lora import DoRALinear, LoRALinear, lora_scaling
from tuner.peft.utils import (
    LoRAStateDictError,
    clone_merged,
    disable_adapter,
    disable_adapters,
    get_adapter_params,
    get_adapter_state_dict,
    get_lora_module_names,
    get_merged_lora_ckpt,
    is_adapter_key,
    lora_config_from_model,
    lora_plus_param_groups,
    merge_lora_weights,
    set_trainable_params,
    trainable_params_summary,
    validate_missing_and_unexpected_for_lora,
)
from tuner.peft.vera import VeRALinear, VeRAProjections

__all__ = [
    "LORA_ATTN_MODULES",
    "LORA_MLP_MODULES",
    "AdapterModule",
    "DeltaLoRA",
    "DoRALinear",
    "LoRALinear",
    "LoRAStateDictError",
    "RowShards",
    "VeRALinear",
    "VeRAProjections",
    "apply_lora",
    "clone_merged",
    "delta_lora_layers",
    "disable_adapter",
    "disable_adapters",
    "get_lora_module_names",
    "get_adapter_params",
    "get_adapter_state_dict",
    "get_merged_lora_ckpt",
    "initialize_adapters",
    "is_adapter_key",
    "load_moved_base",
    "lora_plus_param_groups",
    "lora_scaling",
    "merge_lora_weights",
    "set_trainable_params",
    "trainable_params_summary",
    "validate_missing_and_unexpected_for_lora",
    "lora_config_from_model",
]
