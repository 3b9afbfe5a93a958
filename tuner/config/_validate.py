"""Check a config without building anything: every component imports, its keys bind, and each
value fits the type its parameter is annotated with."""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Iterable as IterableABC
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from tuner.config._components import COMPONENT_KEY, resolve_component
from tuner.config._utils import _has_component
from tuner.errors import ConfigError, did_you_mean


@dataclass
class Problem:
    """One problem: the message shown to the user (with its key path) and the exception it is
    (a TypeError worded as Python's for a bad keyword, as torchtune's validate reports it)."""

    message: str
    error: Exception


def _type_hints(fn: Callable) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: judge nothing
        return {}


def value_fits(hint: Any, value: Any) -> bool | None:
    """Whether a config value fits a parameter annotation: True, False, or None when the annotation
    is not one this check understands (then nothing is reported)."""
    if isinstance(value, Mapping) and COMPONENT_KEY in value:
        return None  # built into an object first
    if hint is Any or hint is object:
        return True
    if getattr(hint, "__module__", "") == "torch" and getattr(hint, "__name__", "") == "Tensor":
        return False  # no YAML value is a tensor (a Union with float still accepts numbers)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [value_fits(a, value) for a in args]
        return True if any(v is True for v in verdicts) else (False if all(v is False for v in verdicts) else None)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (os.PathLike, PurePath) or (inspect.isclass(hint) and issubclass(hint, PurePath)):
        return isinstance(value, str)
    if origin in (list, tuple, SequenceABC, IterableABC, set, frozenset) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            verdicts = [value_fits(a, v) for a, v in zip(args, value)]
        elif args:
            verdicts = [value_fits(args[0], v) for v in value]
        else:
            return True
        return False if any(v is False for v in verdicts) else (True if all(verdicts) else None)
    if origin in (dict, MappingABC) or hint is dict:
        return isinstance(value, Mapping)
    return None


def check_binding(
    fn: Callable, keys: Iterable[str], key_path: str, n_positional: int = 0, values: Mapping[str, Any] | None = None
) -> list[Problem]:
    """Problems with calling ``fn(**keys)``: keys it does not take (with a "did you mean") and, when
    ``values`` are given, values that do not fit their parameter's annotation.

    Missing required arguments are not reported: recipes pass some positionally (the tokenizer
    to a dataset, the parameters to an optimizer).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = sig.parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    name = getattr(fn, "__qualname__", repr(fn))
    problems = []
    hints = _type_hints(fn) if values else {}
    for key in keys:
        where = f"{key_path}.{key}" if key_path else key
        if key not in accepted:
            if open_ended:
                continue
            hint = did_you_mean(key, accepted) or f"; it takes: {', '.join(accepted) or 'no arguments'}"
            error = TypeError(f"{getattr(fn, '__name__', name)} got an unexpected keyword argument '{key}'")
            problems.append(Problem(f"{where}: {name}() got an unexpected argument {key!r}{hint}", error))
        elif values is not None and key in hints and key in values and value_fits(hints[key], values[key]) is False:
            shown = repr(values[key]) if isinstance(values[key], str) else values[key]
            message = f"{where}={shown} does not fit {name}()'s parameter {key}: {_hint_name(hints[key])}"
            problems.append(Problem(message, TypeError(message)))
    return problems


def _hint_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return text or str(hint).replace("typing.", "")


def _walk(node: Any, key_path: str, problems: list[Problem]) -> None:
    if isinstance(node, dict):
        if _has_component(node):
            try:
                fn = resolve_component(node[COMPONENT_KEY], key_path or "<root>")
            except ConfigError as e:
                problems.append(Problem(f"{key_path or '<root>'}: {e.message}", e))
                fn = None
            if fn is not None:
                problems.extend(check_binding(fn, [k for k in node if k != COMPONENT_KEY], key_path, values=node))
        for k, v in node.items():
            if k != COMPONENT_KEY:
                _walk(v, f"{key_path}.{k}" if key_path else str(k), problems)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, f"{key_path}[{i}]", problems)


def _problems(cfg: DictConfig | dict) -> list[Problem]:
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:  # interpolation errors are config errors too
            return [Problem(f"interpolation: {str(e).splitlines()[0]}", e)]
    problems: list[Problem] = []
    _walk(cfg, "", problems)
    return problems


def find_problems(cfg: DictConfig | dict) -> list[str]:
    """Every problem in the config, each prefixed with its dotted key path."""
    return [p.message for p in _problems(cfg)]


def validate(cfg: DictConfig | dict) -> None:
    """Raise one ConfigError that lists every problem (``errors``: one exception each), or return
    if the config is sound."""
    problems = _problems(cfg)
    if problems:
        raise ConfigError(
            f"config has {len(problems)} problem(s):\n  " + "\n  ".join(p.message for p in problems),
            errors=[p.error for p in problems],
        )
