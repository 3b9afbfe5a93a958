"""torchtune's component paths that resolve to ours, so a torchtune config ports by renaming
``torchtune.`` to ``tuner.`` (and even without that: the ``torchtune.`` prefix is accepted)."""

from __future__ import annotations

ALIASES: dict[str, str] = {
    "tuner.training.FullModelHFCheckpointer": "tuner.checkpoint.HFCheckpointer",
    "tuner.training.FullModelMetaCheckpointer": "tuner.checkpoint.MetaCheckpointer",
    "tuner.training.FullModelTorchTuneCheckpointer": "tuner.checkpoint.NativeCheckpointer",
    "tuner.training.checkpointing.FullModelHFCheckpointer": "tuner.checkpoint.HFCheckpointer",
    "tuner.training.checkpointing.FullModelMetaCheckpointer": "tuner.checkpoint.MetaCheckpointer",
    "tuner.training.checkpointing.FullModelTorchTuneCheckpointer": "tuner.checkpoint.NativeCheckpointer",
    "tuner.modules.loss.LinearCrossEntropyLoss": "tuner.training.loss.ChunkedCrossEntropyLoss",
    "tuner.data.padded_collate_sft": "tuner.data.collate.padded_collate_sft",
    "tuner.data.padded_collate_packed": "tuner.data.collate.padded_collate_packed",
    "tuner.datasets.alpaca_cleaned_dataset": "tuner.datasets.alpaca_cleaned_dataset",
    "tuner.training.metric_logging.DiskLogger": "tuner.training.metric_logging.DiskLogger",
    "tuner.modules.rlhf.loss.DPOLoss": "tuner.training.preference_loss.DPOLoss",
    "tuner.modules.rlhf.loss.RSOLoss": "tuner.training.preference_loss.RSOLoss",
    "tuner.modules.rlhf.loss.IPOLoss": "tuner.training.preference_loss.IPOLoss",
    "tuner.modules.rlhf.loss.SimPOLoss": "tuner.training.preference_loss.SimPOLoss",
}


def canonical_path(path: str) -> str:
    """Map a torchtune-style or aliased dotted path to the one to import."""
    if path.startswith("torchtune."):
        path = "tuner." + path[len("torchtune.") :]
    return ALIASES.get(path, path)
