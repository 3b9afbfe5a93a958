"""Check a config without building anything: every component imports and its keys bind."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from tuner.config._instantiate import COMPONENT_KEY, resolve_component
from tuner.config._utils import _has_component
from tuner.errors import ConfigError


@dataclass
class Problem:
    """One problem: the message shown to the user (with its key path) and the exception it is
    (a TypeError worded as Python's for a bad keyword, as torchtune's validate reports it)."""

    message: str
    error: Exception


def check_binding(fn: Callable, keys: Iterable[str], key_path: str, n_positional: int = 0) -> list[Problem]:
    """Problems with calling ``fn(**keys)``: keys it does not take (with a "did you mean").

    Missing required arguments are not reported: recipes pass some positionally (the tokenizer
    to a dataset, the parameters to an optimizer).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    name = getattr(fn, "__qualname__", repr(fn))
    problems = []
    for key in keys:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; it takes: {', '.join(accepted) or 'no arguments'}"
            where = f"{key_path}.{key}" if key_path else key
            error = TypeError(f"{getattr(fn, '__name__', name)} got an unexpected keyword argument '{key}'")
            problems.append(Problem(f"{where}: {name}() got an unexpected argument {key!r}{hint}", error))
    return problems


def _walk(node: Any, key_path: str, problems: list[Problem]) -> None:
    if isinstance(node, dict):
        if _has_component(node):
            try:
                fn = resolve_component(node[COMPONENT_KEY], key_path or "<root>")
            except ConfigError as e:
                problems.append(Problem(f"{key_path or '<root>'}: {e.message}", e))
                fn = None
            if fn is not None:
                problems.extend(check_binding(fn, [k for k in node if k != COMPONENT_KEY], key_path))
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
