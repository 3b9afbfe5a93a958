"""Turn config nodes with a ``_component_`` key into objects."""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from tuner.config._components import COMPONENT_KEY, resolve_component
from tuner.config._errors import InstantiationError
from tuner.config._utils import _has_component
from tuner.config._validate import check_binding
from tuner.errors import ConfigError


def _to_plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _build(node: Any, key_path: str) -> Any:
    if isinstance(node, dict):
        if _has_component(node):
            fn = resolve_component(node[COMPONENT_KEY], key_path)
            kwargs = {k: _build(v, f"{key_path}.{k}" if key_path else k) for k, v in node.items() if k != COMPONENT_KEY}
            return _create_component(fn, (), kwargs, key_path)
        return {k: _build(v, f"{key_path}.{k}" if key_path else k) for k, v in node.items()}
    if isinstance(node, list):
        return [_build(v, f"{key_path}[{i}]") for i, v in enumerate(node)]
    return node


def _create_component(fn: Callable, args: tuple, kwargs: dict, key_path: str = "") -> Any:
    """``fn(*args, **kwargs)``, after checking that the keys bind (a ConfigError names the bad one)."""
    problems = check_binding(fn, kwargs.keys(), key_path, n_positional=len(args))
    if problems:
        raise ConfigError(problems[0].message)
    return fn(*args, **kwargs)


def _instantiate_node(node: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a component node (plain containers): nested components first, then ``node``'s own."""
    if not _has_component(node):
        raise InstantiationError(
            f"Cannot instantiate specified object {node!r}: it has no _component_ key",
            "give the node a _component_: <dotted path>",
        )
    fn = resolve_component(node[COMPONENT_KEY])
    built = {k: _build(v, k) for k, v in node.items() if k != COMPONENT_KEY}
    built.update(kwargs)
    return _create_component(fn, args, built)


def instantiate(node: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the object described by ``node`` (a config node with ``_component_``).

    Nested ``_component_`` nodes are built first; ``args`` are passed positionally and ``kwargs``
    override the node's keys (as torchtune's instantiate does). ``None`` gives ``None``.
    """
    if node is None:
        return None
    return _instantiate_node(_to_plain(node), *args, **kwargs)
