"""Interpolations configs may use: ``${builtin_model:smollm2-135m-instruct}`` is the folder of a
model that a pip package ships (converted once into the cache), so the quickstart needs no hub."""
from __future__ import annotations

from omegaconf import OmegaConf

from tuner.errors import ConfigError, note


def builtin_model(name: str) -> str:
    """Path of a built-in model's HF folder, converting it on first use."""
    if name == "smollm2-135m-instruct":
        from tuner.checkpoint.gguf import default_smollm2_checkpoint

        path = default_smollm2_checkpoint()
        note(f"model: the built-in SmolLM2-135M-Instruct, cached in {path}")
        return str(path)
    raise ConfigError(f"unknown built-in model {name!r}", "the built-in models are: smollm2-135m-instruct")


def register_resolvers() -> None:
    if OmegaConf.has_resolver("builtin_model"):
        return
    register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver  # omegaconf < 2.4
    register("builtin_model", builtin_model, use_cache=True)
