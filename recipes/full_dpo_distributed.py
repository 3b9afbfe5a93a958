"""Full preference fine-tuning (DPO, RSO, IPO, SimPO) on several GPUs (or CPU processes) with
FSDP2, through torchrun.

    tune run --nproc_per_node 8 full_dpo_distributed --config llama3_1/8B_full_dpo

Every weight trains; the frozen reference is a second copy of the base weights (`ref_checkpointer`,
by default the checkpointer's own base), sharded across ranks like the policy. Checkpoints are
those of full_finetune_distributed.
"""

from tuner import config
from tuner.training.distributed import FSDP2
from tuner.training.dpo import FullDPO
from tuner.training.trainer import Trainer

METHOD = FullDPO()
SETTINGS = Trainer.settings_classes(METHOD)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = config.parse(lambda cfg: Trainer(cfg, METHOD, placement=FSDP2).run())

if __name__ == "__main__":
    recipe_main()  # exits with the run's status
