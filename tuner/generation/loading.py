"""Load a model for inference from a recipe config: checkpointer + base model builder, optional
adapters merged in (one, or several to switch between), on the configured device and dtype.

Shared by the generate, eval and merge recipes. Config keys read here:

- ``model``: the *base* model builder (e.g. ``tuner.models.llama3_2.llama3_2_1b``), not a
  ``lora_*`` one: adapters are merged into the base weights.
- ``checkpointer``: any tuner checkpointer; ``checkpoint_dir`` may be a base model or a
  fine-tuned output folder (``output_dir/step_N``, which holds the merged model).
  ``checkpointer.adapter_checkpoint`` is taken as an ``adapter_dir``.
- ``adapter_dir``: one adapter folder (PEFT format; a ``step_N`` folder with ``adapter/`` works).
- ``adapters``: ``{name: folder}``, several adapters over the same base, switched per prompt.
- ``adapter``: which adapter is active by default (a name from ``adapters``, or ``base``); when
  unset: the ``adapter_dir`` one if given, else the base model.
- ``device`` (cuda / cpu / auto), ``dtype`` (bf16 / fp32 / fp16), ``seed``.
"""
from __future__ import annotations

import difflib
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tuner.config import instantiate, validate
from tuner.errors import ConfigError
from tuner.generation.adapters import Adapter, AdapterSwitcher, load_adapter, merge_adapter_into

LOADING_KEYS = frozenset({"model", "checkpointer", "tokenizer", "device", "dtype", "seed", "adapter_dir", "adapters",
                          "adapter", "output_dir"})


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.key`` or ``default`` when absent or null; a ConfigError when the config marks it ``???``."""
    if isinstance(cfg, DictConfig) and "." not in key and key in cfg.keys() and OmegaConf.is_missing(cfg, key):
        raise ConfigError(f"{key} is required (the config leaves it as ???)", fix=f"pass {key}=<value> on the command line")
    value = OmegaConf.select(cfg, key, default=default) if isinstance(cfg, DictConfig) else cfg.get(key, default)
    return default if value is None else value


def check_keys(cfg: DictConfig, known: Iterable[str], recipe: str) -> None:
    """Unknown top-level keys are ConfigErrors with a "did you mean" (a typo must not be ignored)."""
    from tuner.config.torchtune_keys import TORCHTUNE_KEYS, accept_torchtune_keys

    known = sorted(set(known))
    unknown = accept_torchtune_keys(cfg, [str(k) for k in cfg.keys() if k not in known])
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, [*known, *TORCHTUNE_KEYS], n=1, cutoff=0.6)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown config key(s) for the {recipe} recipe: {', '.join(hints)}",
                          fix=f"fix the spelling or remove the key; the {recipe} recipe reads: {', '.join(known)}")


@dataclass
class InferenceModel:
    """A loaded model ready for inference, and what built it."""

    model: nn.Module
    checkpointer: Any
    device: torch.device
    dtype: torch.dtype
    switcher: Optional[AdapterSwitcher] = None
    tokenizer: Any = None

    @property
    def model_type(self) -> str:
        return self.checkpointer.model_type

    def use_adapter(self, name: Optional[str]) -> None:
        """Activate adapter ``name`` (None / "base": the base model)."""
        if self.switcher is None:
            if name not in (None, "base"):
                raise ConfigError(f"adapter {name!r} was asked for but no adapters are loaded",
                                  fix="list it under adapters: {name: folder} or give adapter_dir")
            return
        self.switcher.activate(name)


def adapter_dirs(cfg: DictConfig, checkpointer: Any = None) -> dict[str, str]:
    """``{name: folder}`` from ``adapter_dir`` (named "adapter"), ``adapters`` and the checkpointer's
    ``adapter_checkpoint``."""
    out: dict[str, str] = {}
    node = cfg_get(cfg, "adapters")
    if node is not None:
        if not isinstance(node, (dict, DictConfig)):
            raise ConfigError(f"adapters must be a mapping {{name: folder}}, got {node!r}",
                              fix="write adapters: {my_task: /path/to/step_N}")
        out.update({str(k): str(v) for k, v in node.items()})
    single = cfg_get(cfg, "adapter_dir")
    from_ckpt = getattr(checkpointer, "adapter_checkpoint", None)
    if single is not None and from_ckpt is not None:
        raise ConfigError("both adapter_dir and checkpointer.adapter_checkpoint are set", fix="keep one of them")
    single = single if single is not None else from_ckpt
    if single is not None:
        if "adapter" in out:
            raise ConfigError("adapter_dir and an adapters entry named 'adapter' collide", fix="rename the adapters entry")
        out = {"adapter": str(single), **out}
    return out


def default_adapter(cfg: DictConfig, adapters: Iterable[str]) -> Optional[str]:
    """The adapter active unless a prompt names another: ``adapter``, else ``adapter_dir``'s, else None."""
    name = cfg_get(cfg, "adapter")
    if name is not None:
        return str(name)
    return "adapter" if "adapter" in adapters else None


def build_model(cfg: DictConfig, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Instantiate the checkpointer, build ``cfg.model`` on meta and fill it from the checkpoint."""
    from tuner.peft.utils import ADAPTER_MODULES
    from tuner.training.build import build_on_meta, load_into

    node = cfg_get(cfg, "checkpointer")
    if node is None:
        raise ConfigError("the config has no checkpointer", fix="add a checkpointer node (e.g. tuner.checkpoint.HFCheckpointer)")
    if cfg_get(cfg, "model") is None:
        raise ConfigError("the config has no model", fix="add a model node with the base model builder")
    extra = {} if cfg_get(node, "output_dir") is not None else {"output_dir": tempfile.gettempdir()}
    checkpointer = instantiate(node, **extra)
    model = build_on_meta(cfg.model, dtype)
    if any(isinstance(m, ADAPTER_MODULES) for m in model.modules()):
        raise ConfigError(
            f"model is a LoRA builder ({cfg.model._component_}); inference loads the base model and merges adapters into it",
            fix="use the base builder (e.g. tuner.models.llama3_2.llama3_2_1b) and give the adapter with adapter_dir",
        )
    state = checkpointer.load_checkpoint()
    if "model" not in state:
        raise ConfigError("the checkpointer gave no model weights", fix="point checkpointer.checkpoint_dir at a model folder")
    load_into(model, state["model"], device, dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, checkpointer


def load_inference_model(cfg: DictConfig, *, with_tokenizer: bool = True, keep_base: bool = True,
                         default_dtype: str = "bf16") -> InferenceModel:
    """Build the model (and tokenizer) of ``cfg`` with its adapters.

    With ``keep_base`` the adapters go into an `AdapterSwitcher` and the default one (see the
    module docstring) is active; ``keep_base=False`` merges a single adapter in place (export).
    """
    from tuner.training.precision import get_device, get_dtype

    validate(cfg)
    device = get_device(cfg_get(cfg, "device"))
    dtype = get_dtype(cfg_get(cfg, "dtype", default_dtype), device)
    seed = cfg_get(cfg, "seed")
    if seed is not None:
        torch.manual_seed(int(seed))
    model, checkpointer = build_model(cfg, device, dtype)
    hf_config = getattr(checkpointer, "hf_config", None)
    adapters: dict[str, Adapter] = {
        name: load_adapter(path, checkpointer.model_type, hf_config, name=name)
        for name, path in adapter_dirs(cfg, checkpointer).items()
    }
    result = InferenceModel(model=model, checkpointer=checkpointer, device=device, dtype=dtype)
    if adapters:
        if keep_base or len(adapters) > 1:
            result.switcher = AdapterSwitcher(model, adapters)
            result.use_adapter(default_adapter(cfg, adapters))
        else:
            merge_adapter_into(model, next(iter(adapters.values())))
    if with_tokenizer:
        if cfg_get(cfg, "tokenizer") is None:
            raise ConfigError("the config has no tokenizer", fix="add a tokenizer node (e.g. tuner.models.llama3.llama3_tokenizer)")
        result.tokenizer = instantiate(cfg.tokenizer)
    return result
