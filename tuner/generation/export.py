"""Export: a base model + adapter (LoRA, DoRA, VeRA, QLoRA, ...) -> one merged model folder.

The base is loaded dense in the dtype the adapter was trained in, the adapter merged into it (in
float32, module by module), then cast to ``dtype`` if one is set (a lower precision than training
prints the measured change in logits) and the result written by `save_model_folder` in the base's
own format (the config's checkpointer): for ``HFCheckpointer`` a complete Hugging Face folder
(safetensors, config.json with the saved dtype, generation config and tokenizer files) that
``transformers`` loads as is, written beside ``output_dir`` and renamed into place. See recipes/merge.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from tuner.checkpoint.model_folder import save_model_folder
from tuner.config.settings import read_settings
from tuner.devices import get_dtype
from tuner.errors import ConfigError, warn
from tuner.generation.loading import load_inference_model
from tuner.generation.settings import InferenceSettings, MergeSettings


def _target(settings: InferenceSettings) -> Path:
    out = settings.output_dir
    if out is None:
        raise ConfigError("output_dir is not set", fix="set output_dir to the folder the merged model goes to")
    path = Path(str(out)).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"output_dir {str(path)!r} already exists and is not empty; nothing was written",
            fix="choose a new output_dir, or remove the old folder first",
        )
    return path


def one_adapter_settings(cfg: DictConfig, own: type, recipe: str, output_key: str) -> tuple[InferenceSettings, Any]:
    """The inference settings of an export recipe (merge, export) and its ``own`` settings; such a recipe
    merges one adapter (``adapter_dir``), so several (``adapters``) are refused."""
    settings, own_settings = read_settings(cfg, InferenceSettings, own)
    if settings.adapters is not None:
        raise ConfigError(
            f"{recipe} takes one adapter (adapter_dir), not adapters: {{...}}",
            fix=f"run the {recipe} once per adapter, each with its own adapter_dir and {output_key}",
        )
    return settings, own_settings


def merge_checkpoint(cfg: DictConfig) -> Path:
    """Merge ``adapter_dir`` into the base of ``checkpointer`` and write ``output_dir``; returns it."""
    settings, _ = one_adapter_settings(cfg, MergeSettings, "merge", "output_dir")
    target = _target(settings)
    # Merge in the dtype the adapter was trained in; a lower output dtype is a cast afterwards, measured.
    loaded = load_inference_model(dataclasses.replace(settings, dtype=None), with_tokenizer=False, keep_base=False)
    out_dtype = loaded.dtype if settings.dtype is None else get_dtype(settings.dtype, loaded.device)
    if MANTISSA_BITS[out_dtype] < MANTISSA_BITS[loaded.dtype]:
        change = cast_and_measure(loaded.model, out_dtype)
        warn(
            f"merging into {_name(out_dtype)}, a lower precision than the {_name(loaded.dtype)} the weights were "
            f"trained in ({loaded.dtype_source}), changes the logits on a probe sequence by up to {change.max_abs:.3g} "
            f"(mean {change.mean_abs:.3g}) and the top token at {change.top1_changed} of {change.positions} positions; "
            f"set dtype={_name(loaded.dtype).replace('float', 'fp')} to keep what training learned"
        )
    state = {
        k: v.detach().to("cpu", out_dtype) if v.is_floating_point() else v.detach().cpu()
        for k, v in loaded.model.state_dict().items()
    }
    save_model_folder(loaded.checkpointer, state, target)
    return target


MANTISSA_BITS = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class LogitChange:
    """How much a cast moved the logits on a probe sequence."""

    max_abs: float
    mean_abs: float
    top1_changed: int
    positions: int


@torch.no_grad()
def cast_and_measure(model: nn.Module, dtype: torch.dtype, length: int = 32, seed: int = 0) -> LogitChange:
    """Cast ``model`` to ``dtype`` in place and report how its logits moved on a fixed random probe
    sequence (the same ids before and after, computed in float32 either way)."""
    vocab = model.tok_embeddings.num_embeddings
    device = next(model.parameters()).device
    probe = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed)).to(device)
    before = model(probe).float()
    model.to(dtype)
    after = model(probe).float()
    diff = (after - before).abs()
    return LogitChange(
        float(diff.max()), float(diff.mean()), int((after.argmax(-1) != before.argmax(-1)).sum()), length
    )


def merged_summary(path: Path) -> str:
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return f"merged model written to {path} ({size / 2**20:.1f} MiB: {', '.join(files)})"
