"""torchtune's ``torchtune.training.checkpointing`` names; tuner's checkpointers live in
`tuner.checkpoint` (they write ``step_<N>`` folders, see its docstring)."""

from tuner.checkpoint import FullModelHFCheckpointer, FullModelMetaCheckpointer, FullModelTorchTuneCheckpointer  # noqa: F401
from tuner.training.checkpointing._utils import (  # noqa: F401
    ADAPTER_CONFIG,
    ADAPTER_KEY,
    MODEL_KEY,
    FormattedCheckpointFiles,
)
