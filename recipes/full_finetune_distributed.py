"""Full fine-tuning on several GPUs (or CPU processes) with FSDP2, through torchrun.

    tune run --nproc_per_node 8 full_finetune_distributed --config llama3_1/8B_full

The same loop and the same meaning of "full fine-tuning" as `full_finetune_single_device`; only
the placement differs: each decoder layer is sharded across ranks (FSDP2), metrics are logged from
rank 0, and checkpoints gather a full state dict so the output folder loads in transformers.
"""

import sys

from tuner.training.distributed import FSDP2
from tuner.training.full import FullFinetune
from tuner.training.trainer import Trainer, training_recipe

METHOD = FullFinetune()
SETTINGS = Trainer.settings_classes(METHOD, FSDP2)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=FSDP2)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
