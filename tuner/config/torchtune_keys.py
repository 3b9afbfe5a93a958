"""Top-level keys that torchtune 0.6.1's configs and recipes use and tuner does not need.

A torchtune config runs unchanged: each such key is accepted with one printed note saying why
tuner does without it, never an error. The one exception is a value tuner cannot honour (it would
change what is trained, or how): that is a ConfigError with the fix. The one config check
(`tuner.config.settings.check_config`, shared by `tune validate` and `tune run`) consults this
table, the only one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from tuner.errors import note


@dataclass(frozen=True)
class TorchtuneKey:
    """Why tuner does without a key; ``refuse(value)`` is true for values it cannot honour, with ``fix``."""

    note: str
    refuse: Callable[[Any], bool] | None = None
    fix: str = ""


def _above_one(value: Any) -> bool:
    return value is not None and int(value) > 1


def _not_null(value: Any) -> bool:
    return value is not None


TORCHTUNE_KEYS: dict[str, TorchtuneKey] = {
    "custom_sharded_layers": TorchtuneKey(
        "tuner's FSDP2 shards every decoder layer and the rest of the model as one unit; this only moves memory "
        "between units"
    ),
    "tensor_parallel_dim": TorchtuneKey(
        "tuner shards with FSDP2 only (data parallel); 1 means no tensor parallelism",
        _above_one,
        "set tensor_parallel_dim=1 (tuner has no tensor parallelism: FSDP2 shards the model across all ranks)",
    ),
    "tensor_parallel_plan": TorchtuneKey("only used with tensor_parallel_dim > 1, which tuner does not do"),
    "low_cpu_ram": TorchtuneKey("tuner always fills the model shard by shard from a meta-device build"),
    "fsdp": TorchtuneKey("torchtune 0.6.1's recipes do not read it either; tuner's key is fsdp_cpu_offload"),
    "cudnn_deterministic_mode": TorchtuneKey(
        "tuner leaves torch.use_deterministic_algorithms as it is (seed fixes the data order and initialisation)"
    ),
    "enable_async_checkpointing": TorchtuneKey(
        "tuner writes each checkpoint atomically (temporary folder, then rename); the files are the same"
    ),
    "resume_from_checkpoint": TorchtuneKey("generation and evaluation load weights only, never a training state"),
    "log_level": TorchtuneKey("tuner prints its own progress lines; errors are one line"),
    "enable_kv_cache": TorchtuneKey(
        "the eval recipe scores each sequence in one forward and generates with a KV cache"
    ),
    "quantizer": TorchtuneKey(
        "null means no quantization, tuner's only mode for generation and evaluation",
        _not_null,
        "set quantizer=null (tuner generates and evaluates the model in dtype; QLoRA adapters merge into a dense base)",
    ),
}


def torchtune_key_refusals(cfg: Mapping[str, Any], keys: Iterable[str]) -> dict[str, str | None]:
    """For each of ``keys`` that is a torchtune key: None when tuner can do without it, else the
    problem line for a value tuner cannot honour."""
    out: dict[str, str | None] = {}
    for key in keys:
        entry = TORCHTUNE_KEYS.get(str(key))
        if entry is None:
            continue
        value = cfg.get(str(key))
        refused = entry.refuse is not None and entry.refuse(value)
        out[str(key)] = (
            f"{key}={value!r} asks for what tuner cannot do ({entry.note}); {entry.fix}" if refused else None
        )
    return out


def note_torchtune_keys(keys: Iterable[str]) -> None:
    """One ``[tuner] note:`` line (rank 0) for each torchtune key in ``keys`` that tuner does without."""
    if os.environ.get("RANK", "0") != "0":
        return
    for key in keys:
        entry = TORCHTUNE_KEYS.get(str(key))
        if entry is not None:
            note(f"{key} is a torchtune key tuner does not need: {entry.note}")
