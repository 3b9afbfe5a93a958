"""Export: a base model + adapter (LoRA, DoRA, VeRA, QLoRA, ...) -> one merged model folder.

The base is loaded dense in the output dtype, the adapter merged into it (in float32, module by
module) and the result written by the config's checkpointer in the base's own format: for
``HFCheckpointer`` a complete Hugging Face folder (safetensors, config.json with the saved dtype,
generation config and tokenizer files) that ``transformers`` loads as is. See recipes/merge.py.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from tuner.errors import ConfigError
from tuner.generation.loading import LOADING_KEYS, adapter_dirs, cfg_get, check_keys, load_inference_model

MERGE_KEYS = LOADING_KEYS


def _target(cfg: DictConfig) -> Path:
    out = cfg_get(cfg, "output_dir")
    if out is None:
        raise ConfigError("output_dir is not set", fix="set output_dir to the folder the merged model goes to")
    path = Path(str(out)).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"output_dir {str(path)!r} already exists and is not empty; nothing was written",
                          fix="choose a new output_dir, or remove the old folder first")
    return path


def merge_checkpoint(cfg: DictConfig) -> Path:
    """Merge ``adapter_dir`` into the base of ``checkpointer`` and write ``output_dir``; returns it."""
    check_keys(cfg, MERGE_KEYS, "merge")
    target = _target(cfg)
    if len(adapter_dirs(cfg)) > 1 or cfg_get(cfg, "adapters") is not None:
        raise ConfigError("merge takes one adapter (adapter_dir), not adapters: {...}",
                          fix="run the merge once per adapter, each with its own adapter_dir and output_dir")
    loaded = load_inference_model(cfg, with_tokenizer=False, keep_base=False, default_dtype="bf16")
    state = {k: v.detach().to("cpu", loaded.dtype) if v.is_floating_point() else v.detach().cpu()
             for k, v in loaded.model.state_dict().items()}
    checkpointer = loaded.checkpointer
    staging = target.parent / f".{target.name}.merge-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    checkpointer.output_dir = staging
    checkpointer.keep_last_n_checkpoints = None
    try:
        written = checkpointer.save_checkpoint({"model": state}, step=0, epoch=0)
        if target.exists():
            target.rmdir()  # empty (checked above)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def merged_summary(path: Path) -> str:
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return f"merged model written to {path} ({size / 2**20:.1f} MiB: {', '.join(files)})"

