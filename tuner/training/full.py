"""What full fine-tuning means to the training loop: every weight trains and each checkpoint is
the whole model in the format it was loaded from (the `FinetuneMethod` defaults)."""

from __future__ import annotations

from tuner.training.trainer import FinetuneMethod


class FullFinetune(FinetuneMethod):
    """All parameters train; checkpoints hold the full model."""

    name = "full fine-tune"
