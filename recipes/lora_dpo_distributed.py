"""LoRA-family preference fine-tuning (DPO, RSO, IPO, SimPO) on several GPUs (or CPU processes)
with FSDP2, through torchrun.

    tune run --nproc_per_node 8 lora_dpo_distributed --config llama3_1/8B_lora_dpo

The method of lora_dpo_single_device (the reference is the base with its adapters off); the
placement of lora_finetune_distributed. Pairs are split across ranks; the loss, rewards and
accuracy are averaged over every rank's pairs.
"""

import sys

from tuner.training.distributed import FSDP2
from tuner.training.dpo import LoRADPO
from tuner.training.trainer import Trainer, training_recipe

METHOD = LoRADPO()
SETTINGS = Trainer.settings_classes(METHOD, FSDP2)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=FSDP2)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
