"""Configs: YAML loading (OmegaConf), overrides, ``_component_`` instantiation, validation."""

from tuner.config._instantiate import instantiate, resolve_component
from tuner.config._loading import apply_overrides, load_config, to_container
from tuner.config._parse import parse, parse_recipe_args
from tuner.config._resolvers import register_resolvers
from tuner.config._validate import find_problems, validate

register_resolvers()

__all__ = [
    "apply_overrides",
    "find_problems",
    "instantiate",
    "load_config",
    "parse",
    "parse_recipe_args",
    "resolve_component",
    "to_container",
    "validate",
]
