"""What a fine-tuning run prints at its end: the last checkpoint and how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tuner.checkpoint.atomic import latest_checkpoint, read_marker
from tuner.registry import all_configs


def generation_config(cfg: DictConfig) -> str:
    """The built-in generation config that fits the run's model: the quickstart one for the
    built-in model, else ``<family>/generation`` (else a placeholder)."""
    checkpoint_dir = str(OmegaConf.to_container(cfg.checkpointer, resolve=False).get("checkpoint_dir", ""))
    family = str(cfg.model.get("_component_", "")).split(".")[2:3]
    name = family[0] if family else ""
    candidates = ([f"{name}/quickstart_generation"] if "builtin_model:" in checkpoint_dir else []) + [
        f"{name}/generation"
    ]
    known = set(all_configs())
    return next((c for c in candidates if c in known), "<family>/generation")


def next_steps(cfg: DictConfig, checkpointer: Any) -> list[str]:
    """Lines naming the newest checkpoint in the run's output folder and the commands that use it."""
    latest = latest_checkpoint(checkpointer.output_dir)
    if latest is None:
        return [f"no checkpoint in {checkpointer.output_dir}"]
    step, folder = latest
    marker = read_marker(folder) or {}
    has_adapter, has_model = bool(marker.get("has_adapter")), bool(marker.get("has_model", True))
    adapter_dir = folder / marker.get("adapter_dir", ".") if has_adapter else None
    parts = [
        p
        for p in (
            "merged model" if has_adapter and has_model else "model" if has_model else "",
            f"adapter in {Path(str(adapter_dir)).relative_to(folder).as_posix()}/" if adapter_dir else "",
        )
        if p
    ]
    lines = [f"last checkpoint: {folder} (step {step}; {', '.join(parts)})", "use it:"]
    gen = generation_config(cfg)
    if adapter_dir is not None:
        lines.append(f"  generate:     tune run generate --config {gen} adapter_dir={checkpointer.output_dir}")
        lines.append(f"  chat:         tune run chat --config {gen} adapter_dir={checkpointer.output_dir}")
    else:
        # adapter_dir=null: a generation config may name an adapter (the quickstart's does), not this model's
        lines.append(
            f"  generate:     tune run generate --config {gen} checkpointer.checkpoint_dir={folder} adapter_dir=null"
        )
    lines.append(
        "  resume:       run the same command with resume_from_checkpoint=True (and a larger epochs or "
        "max_steps_per_epoch to train further)"
    )
    if has_model and getattr(checkpointer, "FORMAT", "") == "hf":
        lines.append(f"  transformers: AutoModelForCausalLM.from_pretrained('{folder}')")
    if adapter_dir is not None and getattr(checkpointer, "FORMAT", "") == "hf":
        lines.append(
            "  PEFT:         "
            f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('{checkpointer.checkpoint_dir}'), "
            f"'{adapter_dir}')"
        )
    return lines
