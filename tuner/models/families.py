"""The family registry: every `FamilySpec`, looked up by model_type, alias, module name or HF type.

The built-in families are the modules of ``tuner.models`` that define ``FAMILY``; they are found on
first lookup, so adding a family is adding its module (plus its config rows). `register` adds one
from elsewhere (a plugin, or a test's own spec).

Model types are torchtune's checkpointer names (``LLAMA3``, ``QWEN2``, ...). Several families may
share one (``llama3``, ``llama3_1`` and ``llama3_3`` are all ``LLAMA3`` checkpoints); a lookup by the
model type gives the family named after it, or the first registered.
"""

from __future__ import annotations

import importlib
import pkgutil

import tuner.models as _package
from tuner.errors import ConfigError, did_you_mean
from tuner.models.spec import FamilySpec

_FAMILIES: dict[str, FamilySpec] = {}  # by name, in registration order
_discovered = False


def register(spec: FamilySpec) -> FamilySpec:
    """Add ``spec`` to the registry (again registering the same spec does nothing)."""
    old = _FAMILIES.get(spec.name)
    if old is not None and old is not spec:
        raise ValueError(f"a family named {spec.name!r} is already registered")
    for other in _FAMILIES.values():
        if other.name == spec.name:
            continue
        for name in spec.aliases:
            if name in (other.model_type, *other.aliases):
                raise ValueError(f"{spec.name}'s alias {name!r} already names family {other.name!r}")
    _FAMILIES[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove the family called ``name`` (for tests that register their own)."""
    _FAMILIES.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{_package.__name__}.{info.name}"), "FAMILY", None)
        if isinstance(spec, FamilySpec):
            register(spec)


def families() -> tuple[FamilySpec, ...]:
    """Every registered family, in registration order (the built-in ones by module name)."""
    _discover()
    return tuple(_FAMILIES.values())


def model_types() -> tuple[str, ...]:
    """The canonical model types, each once."""
    return tuple(dict.fromkeys(f.model_type for f in families()))


def family(model_type: object, what: str = "model_type") -> FamilySpec:
    """The family ``model_type`` names: a model type (any case; an enum member's ``name`` too), an
    alias (``LLAMA3_1``) or a family module name (``qwen2_5``). ``what`` is the setting named in
    the error (``checkpointer.model_type``)."""
    if model_type is None or (isinstance(model_type, str) and not model_type.strip()):
        raise ConfigError(f"{what} is not set", fix=f"set it to one of {', '.join(model_types())}")
    key = str(getattr(model_type, "name", model_type)).strip()
    upper = key.upper()
    found = [f for f in families() if upper in (f.name.upper(), f.model_type, *f.aliases)]
    named = [f for f in found if upper in (f.name.upper(), *f.aliases)]
    if named or found:
        return (named or found)[0]
    raise ConfigError(
        f"unknown {what} {model_type!r}",
        fix=f"use one of {', '.join(model_types())}{did_you_mean(upper, model_types())}",
    )


def normalize_model_type(model_type: object, what: str = "model_type") -> str:
    """The canonical model type of ``model_type`` (``"llama3_1"`` -> ``"LLAMA3"``); ConfigError if unknown."""
    return family(model_type, what).model_type


def same_checkpoints(spec: FamilySpec) -> tuple[FamilySpec, ...]:
    """The families whose checkpoints have ``spec``'s model type, ``spec`` first."""
    return (spec, *(f for f in families() if f.model_type == spec.model_type and f is not spec))


def hf_model_types(spec: FamilySpec) -> tuple[str, ...]:
    """The config.json ``model_type`` values a checkpoint of ``spec``'s model type may carry."""
    return tuple(dict.fromkeys(t for f in same_checkpoints(spec) for t in (f.hf_model_type, *f.hf_reads)))
