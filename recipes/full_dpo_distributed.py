"""Full preference fine-tuning (DPO, RSO, IPO, SimPO) on several GPUs (or CPU processes) with
FSDP2, through torchrun.

    tune run --nproc_per_node 8 full_dpo_distributed --config llama3_1/8B_full_dpo

Every weight trains; the frozen reference is a second copy of the base weights (`ref_checkpointer`,
by default the checkpointer's own base), sharded across ranks like the policy. Checkpoints are
those of full_finetune_distributed.
"""

import sys

from tuner.training.distributed import FSDP2
from tuner.training.dpo import FullDPO
from tuner.training.trainer import Trainer, training_recipe

METHOD = FullDPO()
SETTINGS = Trainer.settings_classes(METHOD, FSDP2)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=FSDP2)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
