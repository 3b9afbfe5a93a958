"""Dotted ``_component_`` paths -> the objects they name (torchtune's paths resolve too)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from tuner.config._aliases import canonical_path
from tuner.errors import ConfigError, did_you_mean

COMPONENT_KEY = "_component_"


def resolve_component(path: str, key_path: str = "") -> Callable[..., Any]:
    """Import the object a dotted ``_component_`` path names, with a "did you mean" on failure."""
    where = f" at {key_path}" if key_path else ""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"_component_{where} must be a dotted path string, got {path!r}")
    target = canonical_path(path)
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ConfigError(
            f"unknown component {path!r}{where}", "use a full dotted path such as tuner.models.llama3_2.llama3_2_1b"
        )
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
                raise ConfigError(
                    f"component {path!r}{where} needs the missing package {missing!r}",
                    f"pip install {missing.split('.')[0]}",
                ) from None
            i -= 1
    if obj is None:
        raise ConfigError(f"unknown component {path!r}{where}: no module {parts[0]!r}")
    for j, name in enumerate(parts[i:], start=i):
        if not hasattr(obj, name):
            choices = [c for c in {*dir(obj), *getattr(obj, "__all__", ())} if not c.startswith("_")]
            prefix = ".".join(parts[:j])
            hint = did_you_mean(name, choices)
            if hint:
                hint = hint.replace("'", "'" + prefix + ".", 1)
            raise ConfigError(f"unknown component {path!r}{where}: {prefix!r} has no {name!r}{hint}")
        obj = getattr(obj, name)
    if not callable(obj):
        raise ConfigError(f"component {path!r}{where} is not callable")
    return obj
