"""The non-weight files of a Hugging Face model folder: ``config.json`` (read, and written back
with the saved dtype), ``generation_config.json`` and the tokenizer files, copied so that every
saved checkpoint is a folder ``AutoModelForCausalLM.from_pretrained`` loads as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tuner.checkpoint.atomic import write_text
from tuner.errors import CheckpointError, ConfigError
from tuner.models.families import families, family, hf_model_types

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "merges.txt",
    "vocab.json",
)


def read_hf_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict; a CheckpointError when it is missing or malformed."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{CONFIG_NAME} not found in {str(folder)!r}; the HF checkpointer needs it to convert the weights "
            "and to write loadable output folders",
            fix="download the full model folder (config.json included), or use MetaCheckpointer / NativeCheckpointer "
            "for weights in those formats",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {e}", fix="download config.json again") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(path)!r} does not hold a JSON object", fix="download config.json again")
    return config


def check_family(model_type: str, hf_config: dict[str, Any], where: Path) -> None:
    """Raise when ``config.json`` names a known architecture other than ``model_type``'s."""
    hf_type = str(hf_config.get("model_type", "")).lower()
    readable = {f.model_type: hf_model_types(f) for f in families()}
    known = {t for types in readable.values() for t in types}
    if hf_type in known and hf_type not in hf_model_types(family(model_type)):
        fitting = sorted(k for k, v in readable.items() if hf_type in v)
        raise ConfigError(
            f"checkpointer.model_type {model_type} does not match the checkpoint in {str(where)!r}, "
            f"whose config.json says model_type {hf_type!r}",
            fix=f"set checkpointer.model_type to one of {', '.join(fitting)} (and use the model builder of that "
            "family)",
        )


def saved_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype | None:
    """The floating dtype most of the state dict's elements have (what the folder holds)."""
    counts: dict[torch.dtype, int] = {}
    for t in state_dict.values():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else None


def write_hf_config(hf_config: dict[str, Any], folder: Path, dtype: torch.dtype | None) -> None:
    """Write ``config.json`` with ``torch_dtype`` / ``dtype`` set to ``dtype``."""
    config = dict(hf_config)
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        present = [k for k in ("torch_dtype", "dtype") if k in config]
        for key in present or ["torch_dtype"]:
            config[key] = name
    write_text(Path(folder) / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")


def copy_side_files(
    src: Path, dst: Path, names: tuple[str, ...] = (GENERATION_CONFIG_NAME, *TOKENIZER_FILES)
) -> list[str]:
    """Copy the generation config and tokenizer files that exist in ``src`` to ``dst``."""
    copied = []
    for name in names:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied
