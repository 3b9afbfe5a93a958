"""`save_model_folder`: one complete model folder, written atomically (what `tune run merge` makes).

The folder is the one a training checkpoint holds, without the step around it: the weights in the
checkpointer's format, the config with the saved dtype, the tokenizer and other side files of its
``checkpoint_dir`` (written by `_Checkpointer.write_model_folder`, the training checkpoints' own
writer) and a ``CHECKPOINT_COMPLETE`` manifest. It is written beside its final place and renamed
into it, so the folder is complete or absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from tuner.checkpoint.atomic import atomic_folder
from tuner.checkpoint.checkpointer import failure_reason
from tuner.errors import CheckpointError, TunerError


def save_model_folder(
    checkpointer: Any,
    state_dict: Mapping[str, torch.Tensor],
    folder: str | Path,
    manifest: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state_dict`` (tuner keys, merged) as the model folder ``folder`` in ``checkpointer``'s
    format, atomically; ``manifest`` adds entries to the completion manifest. An existing ``folder``
    is replaced as a whole. Returns the folder."""
    folder = Path(str(folder)).expanduser()
    info = {
        **checkpointer.describe(),
        "has_model": True,
        "has_adapter": False,
        "has_training_state": False,
        **(manifest or {}),
    }
    try:
        with atomic_folder(folder, info) as tmp:
            checkpointer.write_model_folder(dict(state_dict), tmp)
    except TunerError:
        raise
    except Exception as e:  # OSError, or a writer's own error (torch.save's RuntimeError, SafetensorError)
        why, fix = failure_reason(e, folder.parent)
        raise CheckpointError(
            f"could not write the model folder {str(folder)!r}: {why}; nothing was written there", fix=fix
        ) from e
    return folder
