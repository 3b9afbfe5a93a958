"""LoRA-family preference fine-tuning (DPO, RSO, IPO, SimPO) on one device; QLoRA bases work.

    tune run lora_dpo_single_device --config llama3_1/8B_lora_dpo_single_device
    tune run lora_dpo_single_device --config smollm2/135M_lora_dpo_cpu

The loop is the SFT one; the method differs: batches of chosen / rejected pairs, the `loss` key's
preference loss (default DPO), and the base model with its adapters switched off as the frozen
reference (no second copy). Logs rewards/chosen, rewards/rejected, rewards/accuracies,
rewards/margins beside the loss. Checkpoints are those of lora_finetune_single_device.
"""

import sys

from tuner.training.dpo import LoRADPO
from tuner.training.placement import SingleDevice
from tuner.training.trainer import Trainer, training_recipe

METHOD = LoRADPO()
SETTINGS = Trainer.settings_classes(METHOD)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=SingleDevice)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
