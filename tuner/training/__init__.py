"""The training core shared by every recipe: loop, optimizers, schedulers, precision, memory
features, losses, metric loggers and placement (one device or FSDP2).

torchtune's ``torchtune.training`` names are here too (imported on first use): ``get_dtype``,
``set_default_dtype``, ``validate_expected_param_dtype``, ``set_seed``, the lr schedulers and
``get_lr``, ``set_activation_checkpointing``, the optimizer-in-backward helpers, the profiler
(``setup_torch_profiler``, ...), ``disable_dropout`` and the checkpointers' torchtune names.
"""

from __future__ import annotations

from tuner._lazy import lazy_exports

_EXPORTS = {
    "PRECISION_STR_TO_DTYPE": "tuner.devices",
    "get_dtype": "tuner.devices",
    "set_default_dtype": "tuner.devices",
    "validate_expected_param_dtype": "tuner.devices",
    "verify_bf16_support": "tuner.devices",
    "set_seed": "tuner.training.seed",
    "get_cosine_schedule_with_warmup": "tuner.training.lr_schedulers",
    "get_lr": "tuner.training.lr_schedulers",
    "set_activation_checkpointing": "tuner.training.memory",
    "OptimizerInBackwardWrapper": "tuner.training.optim",
    "create_optim_in_bwd_wrapper": "tuner.training.optim",
    "register_optim_in_bwd_hooks": "tuner.training.optim",
    "disable_dropout": "tuner.training._model_util",
    "DEFAULT_PROFILE_DIR": "tuner.training.profiler",
    "DEFAULT_PROFILER_ACTIVITIES": "tuner.training.profiler",
    "DEFAULT_SCHEDULE": "tuner.training.profiler",
    "DEFAULT_TRACE_OPTS": "tuner.training.profiler",
    "DummyProfiler": "tuner.training.profiler",
    "PROFILER_KEY": "tuner.training.profiler",
    "setup_torch_profiler": "tuner.training.profiler",
    "FullModelHFCheckpointer": "tuner.training.checkpointing",
    "FullModelMetaCheckpointer": "tuner.training.checkpointing",
    "FullModelTorchTuneCheckpointer": "tuner.training.checkpointing",
    "FormattedCheckpointFiles": "tuner.training.checkpointing",
    "MODEL_KEY": "tuner.training.checkpointing",
    "ADAPTER_KEY": "tuner.training.checkpointing",
    "ADAPTER_CONFIG": "tuner.training.checkpointing",
    "get_quantizer_mode": "tuner.training.quantization",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
