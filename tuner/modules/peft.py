"""torchtune's ``torchtune.modules.peft`` names; the implementations live in `tuner.peft`."""

from tuner.errors import unsupported
from tuner.peft import (  # noqa: F401
    AdapterModule,
    DoRALinear,
    LoRALinear,
    disable_adapter,
    get_adapter_params,
    get_adapter_state_dict,
    get_lora_module_names,
    get_merged_lora_ckpt,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)

QATLoRALinear = unsupported(
    "tuner.modules.peft.QATLoRALinear",
    "quantization-aware training (QAT) is outside tuner's scope",
    "use LoRALinear, or QLoRA (quantize_base=True)",
)
