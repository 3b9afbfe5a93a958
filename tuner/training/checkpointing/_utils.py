"""torchtune's ``torchtune.training.checkpointing._utils`` names, backed by `tuner.checkpoint`.

The key and file-name constants are the ones tuner's checkpointers use: ``load_checkpoint()``
returns ``{"model", "adapter", ...}``; weight shards are ``model-0000i-of-0000n.safetensors``;
adapters ``adapter_model.safetensors`` + ``adapter_config.json`` (HF PEFT's names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.checkpoint.files import FormattedCheckpointFiles, check_outdir_not_in_ckptdir  # noqa: F401
from tuner.checkpoint.weights import load_weight_file
from tuner.errors import unsupported

MODEL_KEY = "model"
ADAPTER_KEY = "adapter"
ADAPTER_CONFIG = "adapter_config"
ADAPTER_CONFIG_FNAME = "adapter_config"
ADAPTER_MODEL_FNAME = "adapter_model"
SHARD_FNAME = "model-{cpt_idx}-of-{num_shards}"


def safe_torch_load(checkpoint_path: str | Path, weights_only: bool = True, mmap: bool = True) -> dict[str, Any]:
    """A weight file (safetensors, or a PyTorch file of tensors) as a CPU state dict.

    Loading is always safe: PyTorch files load with ``weights_only=True`` whatever ``weights_only``
    says, so a file that needs to unpickle other objects is refused with a CheckpointError.
    """
    return load_weight_file(checkpoint_path)


update_state_dict_for_classifier = unsupported(
    "tuner.training.update_state_dict_for_classifier",
    "classifier (reward-model) heads are outside tuner's scope",
    "fine-tune the language model",
)
