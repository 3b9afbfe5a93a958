"""Adapters over a plain base model at inference time: load, check, merge, switch.

An adapter (HF PEFT folder, or tuner's own ``adapter.safetensors``) is applied by merging it into
the base weights of the modules it adapts, so generation runs at the base model's speed and
gives the very weights a merged export (``tune run merge``) holds. Several adapters over one base
are switched by restoring the touched base weights (kept on the CPU, only for the modules some
adapter touches) and merging the next adapter: the base is loaded once.

LoRA, rsLoRA, DoRA, VeRA and PiSSA-exported adapters merge through
`tuner.peft.get_merged_lora_ckpt`; a QLoRA adapter is a LoRA adapter trained over an NF4 base
and is merged into the dense base weights (as PEFT's ``merge_and_unload`` over a dense model).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from tuner.checkpoint.peft_format import ADAPTER_CONFIG, load_peft_adapter, read_peft_config
from tuner.checkpoint.weights import load_weight_file, read_safetensors_metadata
from tuner.errors import CheckpointError, ConfigError, TunerError
from tuner.peft import get_merged_lora_ckpt
from tuner.peft.utils import ADAPTER_KEY_SUFFIXES, adapted_module, is_adapter_key

PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TUNER_ADAPTER = "adapter.safetensors"
BASE_NAME = "base"  # the name that selects no adapter


@dataclass
class Adapter:
    """One adapter in tuner keys: ``state`` (adapter tensors, plus base weights it replaces),
    ``config`` (``lora_rank``, ``lora_alpha``, ``use_rslora``, ...) and where it came from."""

    name: str
    path: Path
    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    modules: list[str] = field(default_factory=list)  # module prefixes ("layers.0.attn.q_proj.")


def find_adapter_folder(path: str | os.PathLike) -> Path:
    """The folder that holds the adapter: ``path`` itself, or its ``adapter/`` subfolder (a LoRA
    run's ``step_N`` folder keeps the merged model on top and the adapter below)."""
    p = Path(str(path)).expanduser()
    if p.is_file():
        p = p.parent
    if not p.exists():
        raise CheckpointError(
            f"adapter folder {str(p)!r} does not exist",
            fix="point adapter_dir at a folder with adapter_model.safetensors + adapter_config.json "
            "(a LoRA run's output_dir/step_N or its adapter/ subfolder)",
        )
    for folder in (p, p / "adapter"):
        if any((folder / n).is_file() for n in (*PEFT_WEIGHTS, TUNER_ADAPTER)):
            return folder
    raise CheckpointError(
        f"no adapter in {str(p)!r} (looked for {', '.join((*PEFT_WEIGHTS, TUNER_ADAPTER))} there and in adapter/)",
        fix="point adapter_dir at the folder a LoRA run saved (output_dir/step_N or its adapter/ subfolder)",
    )


def _module_prefixes(state: Mapping[str, torch.Tensor]) -> list[str]:
    return sorted({module + "." for key in state if (module := adapted_module(key)) is not None})


def load_adapter(
    adapter_dir: str | os.PathLike,
    model_type: str,
    hf_config: Optional[Mapping[str, Any]] = None,
    name: str = "adapter",
) -> Adapter:
    """Read an adapter folder (HF PEFT format, or tuner's ``adapter.safetensors``) in tuner keys."""
    folder = find_adapter_folder(adapter_dir)
    if (folder / TUNER_ADAPTER).is_file() and not any((folder / n).is_file() for n in PEFT_WEIGHTS):
        meta = read_safetensors_metadata(folder / TUNER_ADAPTER)
        state = load_weight_file(folder / TUNER_ADAPTER)
        config = json.loads(meta.get("tuner_adapter_config", "{}"))
        saved_type = meta.get("tuner_model_type")
        if saved_type and model_type and saved_type != model_type:
            raise CheckpointError(
                f"adapter {name!r} ({folder}) was saved for model_type {saved_type}, not {model_type}",
                fix="use an adapter trained on this base model",
            )
    else:
        try:
            state = load_peft_adapter(folder, model_type, hf_config)  # checks the config's PEFT options too
            config = _peft_merge_settings(folder)
        except CheckpointError:
            raise
        except TunerError as e:
            raise CheckpointError(f"adapter {name!r} ({folder}): {e.message}", fix=e.fix) from None
    if not _module_prefixes(state):
        raise CheckpointError(
            f"adapter {name!r} ({folder}) holds no adapter weights", fix="point adapter_dir at a LoRA adapter folder"
        )
    return Adapter(name=name, path=folder, state=state, config=config, modules=_module_prefixes(state))


def _peft_merge_settings(folder: Path) -> dict[str, Any]:
    """What merging needs from ``adapter_config.json`` (any target modules: merging does not
    rebuild the adapter layers, so it is not limited to what `apply_lora` can express)."""
    raw = read_peft_config(folder)
    return {
        "lora_rank": raw.get("r"),
        "lora_alpha": raw.get("lora_alpha"),
        "use_rslora": bool(raw.get("use_rslora", False)),
        "use_dora": bool(raw.get("use_dora", False)),
        "peft_type": raw.get("peft_type"),
        "init_lora_weights": raw.get("init_lora_weights", True),
    }


def check_adapter_fits(model: nn.Module, adapter: Adapter) -> None:
    """Raise a CheckpointError unless every adapted module exists in ``model`` with fitting shapes."""
    problems = []
    params = dict(model.named_parameters())
    for prefix in adapter.modules:
        weight = params.get(prefix + "weight")
        if weight is None:
            problems.append(f"the model has no module {prefix[:-1]!r}")
            continue
        out_dim, in_dim = weight.shape
        a, b = adapter.state.get(prefix + "lora_a.weight"), adapter.state.get(prefix + "lora_b.weight")
        if a is not None and a.shape[1] != in_dim:
            problems.append(f"{prefix}lora_a has input size {a.shape[1]}, the model's {prefix[:-1]} has {in_dim}")
        if b is not None and b.shape[0] != out_dim:
            problems.append(f"{prefix}lora_b has output size {b.shape[0]}, the model's {prefix[:-1]} has {out_dim}")
        lam = adapter.state.get(prefix + "vera_lambda_b")
        if lam is not None and lam.shape[0] != out_dim:
            problems.append(
                f"{prefix}vera_lambda_b has size {lam.shape[0]}, the model's {prefix[:-1]} has {out_dim} outputs"
            )
        if len(problems) >= 3:
            break
    for key, value in adapter.state.items():  # base weights the adapter replaces (PEFT's lm_head base_layer)
        if not is_adapter_key(key):
            if key not in params or params[key].shape != value.shape:
                problems.append(f"the adapter's base weight {key} does not fit the model")
    if problems:
        raise CheckpointError(
            f"adapter {adapter.name!r} ({adapter.path}) does not fit this model: " + "; ".join(problems[:3]),
            fix="use an adapter trained on this base model (same family and size), or the model/checkpointer it was "
            "trained with",
        )


def lora_settings(adapter: Adapter) -> tuple[Optional[int], float, bool]:
    """A LoRA adapter's ``(rank, alpha, use_rslora)`` from its config (the rank from its weights when
    the config lacks it); a CheckpointError when it has no ``lora_alpha``."""
    cfg = adapter.config
    rank = cfg.get("lora_rank", cfg.get("r"))
    alpha = cfg.get("lora_alpha")
    if rank is None:  # tuner adapters saved without a config: read the rank from the weights
        a = next((v for k, v in adapter.state.items() if k.endswith(".lora_a.weight")), None)
        rank = None if a is None else int(a.shape[0])
    if alpha is None:
        raise CheckpointError(
            f"adapter {adapter.name!r} ({adapter.path}) has no lora_alpha in its config",
            fix=f"add lora_alpha to {ADAPTER_CONFIG}",
        )
    return (None if rank is None else int(rank)), float(alpha), bool(cfg.get("use_rslora", False))


@torch.no_grad()
def merged_weight(base_weight: torch.Tensor, adapter: Adapter, prefix: str) -> torch.Tensor:
    """``prefix``'s weight with the adapter merged in, computed in float32 on ``base_weight``'s device."""
    device = base_weight.device
    replaced = adapter.state.get(prefix + "weight")
    base = (replaced if replaced is not None else base_weight).to(device=device, dtype=torch.float32)
    sub: dict[str, torch.Tensor] = {prefix + "weight": base}
    for suffix in ADAPTER_KEY_SUFFIXES:
        if prefix + suffix[1:] in adapter.state:
            sub[prefix + suffix[1:]] = adapter.state[prefix + suffix[1:]].to(device=device, dtype=torch.float32)
    for key, value in adapter.state.items():
        if "vera_projections." in key:
            sub[key] = value.to(device=device, dtype=torch.float32)
    rank, alpha, rslora = lora_settings(adapter) if prefix + "lora_a.weight" in sub else (None, None, False)
    return get_merged_lora_ckpt(sub, rank=rank, alpha=alpha, use_rslora=rslora)[prefix + "weight"]


@torch.no_grad()
def merge_adapter_into(model: nn.Module, adapter: Adapter) -> None:
    """Merge ``adapter`` into ``model``'s base weights in place (no way back; see `AdapterSwitcher`)."""
    check_adapter_fits(model, adapter)
    params = dict(model.named_parameters())
    for prefix in adapter.modules:
        param = params[prefix + "weight"]
        param.copy_(merged_weight(param.detach(), adapter, prefix).to(param.dtype))
    _replace_base_weights(params, adapter)


def _replace_base_weights(params: Mapping[str, torch.Tensor], adapter: Adapter) -> None:
    for key, value in adapter.state.items():
        if key in params and (key[: -len("weight")] not in adapter.modules):
            params[key].copy_(value.to(params[key].dtype))


class AdapterSwitcher:
    """Several adapters over one loaded base model; `activate` switches between them (or back to
    the base with ``None`` / ``"base"``) without reloading anything.

    The original weights of every module some adapter touches are kept on the CPU; switching
    restores the touched modules and merges the next adapter into them.
    """

    def __init__(self, model: nn.Module, adapters: Mapping[str, Adapter]) -> None:
        self.model = model
        self.adapters = dict(adapters)
        if BASE_NAME in self.adapters:
            raise ConfigError(f"an adapter may not be named {BASE_NAME!r} (it selects the base model)", fix="rename it")
        for adapter in self.adapters.values():
            check_adapter_fits(model, adapter)
        self._params = dict(model.named_parameters())
        touched = sorted(
            {p + "weight" for a in self.adapters.values() for p in a.modules}
            | {k for a in self.adapters.values() for k in a.state if k in self._params}
        )
        self._base = {k: self._params[k].detach().to("cpu", copy=True) for k in touched}
        self.active: Optional[str] = None

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    def _keys_of(self, name: Optional[str]) -> set[str]:
        if name is None:
            return set()
        a = self.adapters[name]
        return {p + "weight" for p in a.modules} | {k for k in a.state if k in self._params}

    @torch.no_grad()
    def activate(self, name: Optional[str]) -> None:
        """Make adapter ``name`` (or the base model for None / "base") the active one."""
        if name == BASE_NAME:
            name = None
        if name is not None and name not in self.adapters:
            raise ConfigError(
                f"unknown adapter {name!r}; loaded adapters: {', '.join(self.adapters) or 'none'}",
                fix=f"use one of the names under adapters: (or {BASE_NAME!r} for the base model)",
            )
        if name == self.active:
            return
        for key in self._keys_of(self.active) | self._keys_of(name):
            param = self._params[key]
            param.copy_(self._base[key].to(param.device))
        if name is not None:
            adapter = self.adapters[name]
            for prefix in adapter.modules:
                param = self._params[prefix + "weight"]
                param.copy_(merged_weight(param.detach(), adapter, prefix).to(param.dtype))
            _replace_base_weights(self._params, adapter)
        self.active = name
