"""LoRA-family fine-tuning on one device (LoRA, DoRA, rsLoRA, LoRA+, LoRA-FA, PiSSA, VeRA, QLoRA).

    tune run lora_finetune_single_device --config llama3_2/1B_lora_single_device
    tune run lora_finetune_single_device --config llama3_1/8B_qlora_single_device

The base weights stay frozen (in NF4 for QLoRA configs); only the adapters train. Each
checkpoint holds the adapter in HF PEFT format (`adapter_model.safetensors` + `adapter_config.json`)
and, unless `save_adapter_weights_only: True`, the merged model in the format the base came in.
"""

import sys

from tuner.training.lora import LoRAFinetune
from tuner.training.placement import SingleDevice
from tuner.training.trainer import Trainer, training_recipe

METHOD = LoRAFinetune()
SETTINGS = Trainer.settings_classes(METHOD)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=SingleDevice)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
