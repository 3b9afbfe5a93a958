"""Full fine-tuning on one device: every weight trains.

    tune run full_finetune_single_device --config llama3_2/1B_full_single_device

The loop, checkpoint/resume, logging and memory features live in `tuner.training.Trainer`; what
full fine-tuning means (all parameters train, each checkpoint is the whole model in the format it
was loaded from) is `tuner.training.full.FullFinetune`. Copy this file with `tune cp` and subclass
`FullFinetune` here to change either.
"""

import sys

from tuner.training.full import FullFinetune
from tuner.training.placement import SingleDevice
from tuner.training.trainer import Trainer, training_recipe

METHOD = FullFinetune()
SETTINGS = Trainer.settings_classes(METHOD)  # the top-level keys this recipe reads (`tune validate` checks them)
recipe_main = training_recipe(METHOD, placement=SingleDevice)  # reads the config, runs Trainer(cfg, METHOD, placement)

if __name__ == "__main__":
    sys.exit(recipe_main())
