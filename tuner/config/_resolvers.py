"""Interpolations configs may use: ``${builtin_model:smollm2-135m-instruct}`` is the folder of a
model that a pip package ships (converted once into the cache), so the quickstart needs no hub."""

from __future__ import annotations

import inspect

from omegaconf import OmegaConf

from tuner.config._components import resolve_component
from tuner.errors import ConfigError, note

#: Built-in models: name -> the function (a dotted path, resolved on use) that returns its folder.
BUILTIN_MODELS = {"smollm2-135m-instruct": "tuner.checkpoint.gguf.default_smollm2_checkpoint"}


def builtin_model(name: str) -> str:
    """Path of a built-in model's HF folder, converting it on first use."""
    if name not in BUILTIN_MODELS:
        raise ConfigError(f"unknown built-in model {name!r}", f"the built-in models are: {', '.join(BUILTIN_MODELS)}")
    path = resolve_component(BUILTIN_MODELS[name])()
    note(f"model: the built-in {name}, cached in {path}")
    return str(path)


def register_resolvers() -> None:
    if OmegaConf.has_resolver("builtin_model"):
        return
    # omegaconf 2.4 names it register_resolver; before 2.4 that name is the legacy one, without use_cache.
    register = getattr(OmegaConf, "register_resolver", None)
    if register is None or "use_cache" not in inspect.signature(register).parameters:
        register = OmegaConf.register_new_resolver
    register("builtin_model", builtin_model, use_cache=True)
