"""Turn config nodes with a ``_component_`` key into objects."""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from tuner.config._aliases import canonical_path
from tuner.config._errors import InstantiationError
from tuner.config._utils import _has_component
from tuner.errors import ConfigError

COMPONENT_KEY = "_component_"


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve_component(path: str, key_path: str = "") -> Callable[..., Any]:
    """Import the object a dotted ``_component_`` path names, with a "did you mean" on failure."""
    where = f" at {key_path}" if key_path else ""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"_component_{where} must be a dotted path string, got {path!r}")
    target = canonical_path(path)
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"unknown component {path!r}{where}", "use a full dotted path such as tuner.models.llama3_2.llama3_2_1b")
    # Walk down from the longest importable module prefix (supports Class.method paths too).
    parts = target.split(".")
    obj, i = None, len(parts)
    while i > 0:
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if not ".".join(parts[:i]).startswith(missing):
                raise ConfigError(f"component {path!r}{where} needs the missing package {missing!r}", f"pip install {missing.split('.')[0]}") from None
            i -= 1
    if obj is None:
        raise ConfigError(f"unknown component {path!r}{where}: no module {parts[0]!r}")
    for j, name in enumerate(parts[i:], start=i):
        if not hasattr(obj, name):
            choices = [c for c in {*dir(obj), *getattr(obj, "__all__", ())} if not c.startswith("_")]
            prefix = ".".join(parts[:j])
            hint = _suggest(name, choices)
            if hint:
                hint = hint.replace("'", "'" + prefix + ".", 1)
            raise ConfigError(f"unknown component {path!r}{where}: {prefix!r} has no {name!r}{hint}")
        obj = getattr(obj, name)
    if not callable(obj):
        raise ConfigError(f"component {path!r}{where} is not callable")
    return obj


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
    from tuner.config._validate import check_binding

    problems = check_binding(fn, kwargs.keys(), key_path, n_positional=len(args))
    if problems:
        raise ConfigError(problems[0].message)
    return fn(*args, **kwargs)


def _instantiate_node(node: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a component node (plain containers): nested components first, then ``node``'s own."""
    if not _has_component(node):
        raise InstantiationError(f"Cannot instantiate specified object {node!r}: it has no _component_ key",
                                 "give the node a _component_: <dotted path>")
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
