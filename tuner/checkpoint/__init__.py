"""Checkpoints: read HF / Meta / native weights into tuner's layout, write atomic, loadable
``step_<N>`` folders, and carry the training state for exact resume.

A saved ``output_dir/step_<N>/`` (HFCheckpointer) holds::

    model.safetensors | model-0000i-of-0000n.safetensors + model.safetensors.index.json
    config.json (dtype = saved dtype), generation_config.json, tokenizer files   (copied)
    adapter/adapter_model.safetensors + adapter/adapter_config.json   (adapter runs; PEFT format)
    training_state.pt                                                  (weights_only-loadable)
    sharded_state/  instead of training_state.pt in distributed runs  (DCP shards; see sharded.py)
    CHECKPOINT_COMPLETE                                                (manifest, written last)

With ``adapter_only`` the PEFT files sit at the top level and ``adapter_config.json`` names
``checkpoint_dir`` as the base, so ``AutoModelForCausalLM.from_pretrained(step_<N>)`` and
``PeftModel.from_pretrained(base, step_<N>)`` both load it. Meta folders hold
``consolidated.00.pth`` + ``params.json``; native ones ``model.safetensors`` in tuner keys and
``adapter.safetensors`` (tuner keys).

Resume (``resume_from_checkpoint=True``) picks the highest complete step in ``output_dir``: a full
fine-tune reloads that folder's weights; an adapter run reloads the base from ``checkpoint_dir``
plus the folder's adapter (its full model has the adapter merged in).
"""

from tuner.checkpoint.atomic import MARKER_NAME, latest_checkpoint, list_checkpoints, prune_checkpoints
from tuner.checkpoint.checkpointer import HFCheckpointer, MetaCheckpointer, NativeCheckpointer
from tuner.checkpoint.fill import build_on_meta, fill_model
from tuner.checkpoint.model_folder import save_model_folder
from tuner.checkpoint.model_state import check_state_dict, load_model_state
from tuner.checkpoint.training_state import (
    TRAINING_STATE_NAME,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
    to_weights_only,
)
from tuner.models.families import normalize_model_type

FullModelHFCheckpointer = HFCheckpointer
FullModelMetaCheckpointer = MetaCheckpointer
FullModelTorchTuneCheckpointer = NativeCheckpointer

__all__ = [
    "HFCheckpointer",
    "MetaCheckpointer",
    "NativeCheckpointer",
    "build_on_meta",
    "fill_model",
    "save_model_folder",
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
    "MARKER_NAME",
    "TRAINING_STATE_NAME",
]
