"""Checkpoints: read HF / Meta / native weights into tuner's layout, write atomic, loadable
``step_<N>`` folders, and carry the training state for exact resume."""
from tuner.checkpoint.atomic import MARKER_NAME, latest_checkpoint, list_checkpoints, prune_checkpoints
from tuner.checkpoint.checkpointer import HFCheckpointer, MetaCheckpointer, NativeCheckpointer
from tuner.checkpoint.model_state import check_state_dict, load_model_state
from tuner.checkpoint.model_types import KNOWN_MODEL_TYPES, normalize_model_type
from tuner.checkpoint.training_state import (
    TRAINING_STATE_NAME,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
    to_weights_only,
)

FullModelHFCheckpointer = HFCheckpointer
FullModelMetaCheckpointer = MetaCheckpointer
FullModelTorchTuneCheckpointer = NativeCheckpointer

__all__ = [
    "HFCheckpointer",
    "MetaCheckpointer",
    "NativeCheckpointer",
    "FullModelHFCheckpointer",
    "FullModelMetaCheckpointer",
    "FullModelTorchTuneCheckpointer",
    "load_model_state",
    "check_state_dict",
    "capture_rng_state",
    "restore_rng_state",
    "save_training_state",
    "load_training_state",
    "to_weights_only",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "normalize_model_type",
    "KNOWN_MODEL_TYPES",
    "MARKER_NAME",
    "TRAINING_STATE_NAME",
]
