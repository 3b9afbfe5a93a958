"""Load a YAML config and apply command-line overrides (``a.b=c``, ``~a.b``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tuner.errors import ConfigError, UsageError


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that reads ``3e-4`` as a float (YAML 1.1 wants ``3.0e-4``), as torchtune's
    configs assume."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path) -> DictConfig:
    """Read a YAML file into a DictConfig, with one clear error for a missing file or bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", "check the path, or run `tune ls` for built-in configs")
    text = path.read_text()
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and cmark is not None:
            problem += f" ({context} at line {cmark.line + 1})"
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}", "fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config {path} cannot be read: {e}") from None


def _parse_value(key: str, text: str):
    """Values on the command line are YAML scalars or flow collections: 1e-4, true, [a, b], null.
    A value that opens a list or mapping must close it; any other text YAML cannot read is a string."""
    try:
        return _yaml_load(text) if text != "" else ""
    except yaml.YAMLError as e:
        if text.lstrip().startswith(("[", "{")):
            problem = getattr(e, "problem", None) or "not valid YAML"
            raise UsageError(
                f"override {key}={text}: the value is not a valid YAML list or mapping ({problem})",
                f"close the brackets and quote the whole override, e.g. '{key}=[0.9, 0.95]'",
            ) from None
        return text


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` (set; dotted keys nest) and ``~key`` (delete) overrides in order.

    Swapping a component (``model._component_=x.y``, or torchtune's shorthand ``model=x.y`` for a
    node that has a ``_component_``) keeps the node's other keys; `validate` later reports keys the
    new component does not take.
    """
    for item in overrides:
        if item.startswith("~"):
            key = item[1:]
            if not key or "=" in key:
                raise UsageError(f"bad override {item!r}", "delete a key with ~key.path (no '=')")
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if not isinstance(parent, DictConfig) or leaf not in parent:
                raise UsageError(f"cannot delete {key!r}: no such key in the config", "check the key with `tune cat`")
            del parent[leaf]
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith("-") or any(c.isspace() for c in key):
            raise UsageError(
                f"bad override {item!r}",
                "overrides are key=value (nested keys with dots, e.g. optimizer.lr=1e-4) or ~key to delete",
            )
        try:
            current = OmegaConf.select(cfg, key, default=None)
        except OmegaConfBaseException:
            current = None  # the update below reports the bad key
        parsed = _parse_value(key, value)
        if isinstance(current, DictConfig) and "_component_" in current and isinstance(parsed, str):
            key = f"{key}._component_"
        try:
            OmegaConf.update(cfg, key, parsed, merge=True, force_add=True)
        except OmegaConfBaseException as e:
            raise UsageError(f"cannot apply override {item!r}: {e}") from None
    return cfg


def to_container(cfg: DictConfig) -> dict:
    """Resolve interpolations and return plain Python containers, with a clear error on a bad ${...}."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config interpolation failed: {e}".splitlines()[0], "check the ${...} references") from None
