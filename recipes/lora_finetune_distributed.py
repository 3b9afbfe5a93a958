"""LoRA-family and QLoRA fine-tuning on several GPUs (or CPU processes) with FSDP2, through torchrun.

    tune run --nproc_per_node 8 lora_finetune_distributed --config llama3_1/70B_lora
    tune run --nproc_per_node 8 lora_finetune_distributed --config llama3_1/70B_qlora

Adapters (and their optimizer states) are sharded across ranks; a bf16 base is sharded too, an
NF4 base (QLoRA) is held whole by every rank (see tuner/training/distributed.py). Checkpoints hold
the adapter in HF PEFT format and, unless `save_adapter_weights_only: True`, the merged model.
Delta-LoRA (`delta_lora_update_ratio=0.5`) moves each rank's rows of the sharded base; its
checkpoints are the merged model, its sharded training state holds the moved base weights.
"""

import sys

from tuner.training.distributed import FSDP2
from tuner.training.lora import LoRAFinetune
from tuner.training.trainer import Trainer, training_recipe

METHOD = LoRAFinetune()
SETTINGS = Trainer.settings_classes(METHOD, FSDP2)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=FSDP2)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
