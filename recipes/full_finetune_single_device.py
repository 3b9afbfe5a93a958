"""Full fine-tuning on one device: every weight trains.

    tune run full_finetune_single_device --config llama3_2/1B_full_single_device

The loop, checkpoint/resume, logging and memory features live in `tuner.training.Trainer`; this
recipe only says what full fine-tuning means: all parameters train and each checkpoint is the
whole model in the format it was loaded from. Copy it with `tune cp` to change that.
"""
import sys

from omegaconf import DictConfig

from tuner import config
from tuner.training.trainer import FinetuneMethod, Trainer


class FullFinetune(FinetuneMethod):
    """All parameters train; checkpoints hold the full model (the `FinetuneMethod` defaults)."""

    name = "full fine-tune"


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    Trainer(cfg, FullFinetune()).run()


if __name__ == "__main__":
    sys.exit(recipe_main())
