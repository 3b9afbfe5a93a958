"""Typed settings: the top-level keys a recipe reads, declared once, read and checked once.

A recipe declares its keys as a frozen dataclass whose fields are made with `setting()` (a scalar
with its type and range) or `component()` (a ``_component_`` node, kept as the config node for
`instantiate`); an optional ``problems()`` method returns what is wrong with a combination of keys,
and an ``ARGUMENTS`` class attribute (``{"optimizer.lr": Spec(...)}``) names scalars inside nodes.
`check_config` runs every check a recipe runs before it builds anything: unknown keys (with a
"did you mean"), the type and range of every scalar, the scalars inside component
nodes that the recipe or the method names (``optimizer.lr``, ``model.lora_rank``, ...), and the
component checks of `find_problems` (imports, argument names, argument types). `tune validate` and
`tune run` both call it, so a config one rejects the other rejects too.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from tuner.config._validate import find_problems
from tuner.config.torchtune_keys import TORCHTUNE_KEYS, note_torchtune_keys, torchtune_key_refusals
from tuner.errors import ConfigError, did_you_mean

_REQUIRED = dataclasses.MISSING
MISSING_VALUE = "???"  # OmegaConf's mark for a value the user must give
FIX = "correct the key in the YAML file or override it on the command line (key=value; ~key deletes it)"
S = TypeVar("S")


@dataclass(frozen=True)
class Spec:
    """What a scalar may be: ``kind`` (int, float, bool, str, a tuple of them, or ``"pair"`` for two
    floats such as Adam's betas), an optional range, a set of choices, and whether null is allowed."""

    kind: Any
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    fix: str | None = None

    def describe(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
            text = " or ".join(_KIND_WORDS.get(k, getattr(k, "__name__", str(k))) for k in kinds)
            bounds = []
            if self.min is not None:
                bounds.append(f"{'>' if self.min_exclusive else '>='} {_num(self.min)}")
            if self.max is not None:
                bounds.append(f"{'<' if self.max_exclusive else '<='} {_num(self.max)}")
            if bounds:
                text += (" each " if self.kind in ("pair", "number_list") else " ") + " and ".join(bounds)
        example = {"pair": ", e.g. [0.9, 0.999]"}.get(self.kind, "") if not isinstance(self.kind, tuple) else ""
        return text + example + (" (or null)" if self.nullable else "")

    def problem(self, key: str, value: Any) -> str | None:
        """Why ``value`` does not fit, as one line naming ``key``; None when it fits."""
        if value is None:
            return None if self.nullable else f"{key} is null; it must be {self.describe()}"
        if not _fits(self, value):
            why = f"; {self.fix}" if self.fix else ""
            return f"{key}={_show(value)} is not valid; it must be {self.describe()}{why}"
        return None


_KIND_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    "pair": "a list of two numbers",
    "number_list": "a list of numbers",
}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_range(spec: Spec, x: float) -> bool:
    if isinstance(x, float) and math.isnan(x):
        return False
    if spec.min is not None and (x < spec.min or (spec.min_exclusive and x == spec.min)):
        return False
    if spec.max is not None and (x > spec.max or (spec.max_exclusive and x == spec.max)):
        return False
    return True


def _fits(spec: Spec, value: Any) -> bool:
    if spec.choices is not None:
        return any(value == c and type(value) is type(c) for c in spec.choices) or (
            isinstance(value, str) and value.lower() in [str(c).lower() for c in spec.choices]
        )
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    for kind in kinds:
        if kind == "pair":
            if (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(_is_number(v) and _in_range(spec, v) for v in value)
            ):
                return True
        elif kind == "number_list":
            if isinstance(value, (list, tuple)) and all(_is_number(v) and _in_range(spec, v) for v in value):
                return True
        elif kind is bool:
            if isinstance(value, bool):
                return True
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool) and _in_range(spec, value):
                return True
        elif kind is float:
            if _is_number(value) and _in_range(spec, value):
                return True
        elif kind is str:
            if isinstance(value, str):
                return True
        elif isinstance(value, kind):
            return True
    return False


def setting(
    default: Any = _REQUIRED,
    kind: Any = str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    choices: Iterable[Any] | None = None,
    nullable: bool | None = None,
    doc: str = "",
) -> Any:
    """A scalar setting: its default (none: required), kind and range. ``nullable`` defaults to
    whether the default is None."""
    spec = Spec(
        kind,
        min,
        max,
        min_exclusive,
        max_exclusive,
        tuple(choices) if choices is not None else None,
        default is None if nullable is None else nullable,
    )
    return field(default=default, metadata={"spec": spec, "doc": doc})


def component(required: bool = False, doc: str = "") -> Any:
    """A ``_component_`` node (or a list of them), kept as the config node to instantiate later."""
    return field(default=_REQUIRED if required else None, metadata={"component": True, "doc": doc})


def node(doc: str = "") -> Any:
    """A mapping (or list) that is not a component, kept as the config node (e.g. ``sample_generation``)."""
    return field(default=None, metadata={"node": True, "doc": doc})


def settings_keys(*classes: type) -> set[str]:
    """Every top-level key the settings classes declare."""
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def _argument_specs(classes: Iterable[type]) -> dict[str, Spec]:
    """``{"optimizer.lr": Spec, ...}``: the specs of scalars inside component nodes that the settings
    classes name in their ``ARGUMENTS`` class attribute."""
    out: dict[str, Spec] = {}
    for cls in classes:
        out.update(getattr(cls, "ARGUMENTS", {}))
    return out


def _plain(cfg: Any) -> Any:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _select(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _read(cls: type, cfg: Any, plain: Mapping[str, Any], problems: list[str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        present = f.name in plain
        if f.metadata.get("component") or f.metadata.get("node"):
            if present and plain[f.name] is not None:
                values[f.name] = cfg[f.name] if isinstance(cfg, DictConfig) else plain[f.name]
                if f.metadata.get("component") and not _is_component_tree(plain[f.name]):
                    problems.append(
                        f"{key} must be a node with a _component_ key (or a list of them), got {_show(plain[f.name])}"
                    )
            else:
                if f.default is _REQUIRED:
                    problems.append(f"{key} is missing; the recipe needs it")
                values[f.name] = f.default
            continue
        spec: Spec = f.metadata["spec"]
        if not present:
            if f.default is _REQUIRED:
                problems.append(f"{key} is missing; it must be {spec.describe()}")
            values[f.name] = f.default
            continue
        value = plain[f.name]
        if value == MISSING_VALUE:
            problems.append(f"{key} is required (the config leaves it as ???); pass {key}=<value>")
            values[f.name] = f.default
            continue
        problem = spec.problem(key, value)
        if problem:
            problems.append(problem)
            values[f.name] = f.default
            continue
        if spec.kind is float and value is not None:
            value = float(value)
        elif spec.choices is not None and isinstance(value, str):
            value = next(c for c in spec.choices if str(c).lower() == value.lower())
        values[f.name] = value
    return values


def _is_component_tree(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "_component_" in value
    if isinstance(value, list):
        return bool(value) and all(_is_component_tree(v) for v in value)
    return False


def find_setting_problems(cfg: Any, classes: Iterable[type]) -> list[str]:
    """Problems with the top-level keys and declared scalars of ``cfg`` against ``classes``, each one
    line naming the dotted key. A torchtune key the classes do not declare is accepted with a note
    (`tuner.config.torchtune_keys`), unless its value asks for what tuner cannot do."""
    classes = list(classes)
    plain = _plain(cfg)
    problems: list[str] = []
    known = settings_keys(*classes)
    unknown = [key for key in plain if key not in known]
    problems += [refusal for refusal in torchtune_key_refusals(plain, unknown).values() if refusal is not None]
    for key in unknown:
        if key not in TORCHTUNE_KEYS:
            problems.append(f"unknown config key {key!r}{did_you_mean(key, sorted(known | set(TORCHTUNE_KEYS)))}")
    for cls in classes:
        own: list[str] = []
        values = _read(cls, cfg, plain, own, "")
        problems.extend(own)
        if not own and hasattr(cls, "problems"):  # combinations only once each key is fine on its own
            problems.extend(cls(**values).problems())
    for dotted, spec in _argument_specs(classes).items():
        present, value = _select(plain, dotted)
        if present:
            problem = spec.problem(dotted, value)
            if problem:
                problems.append(problem)
    return problems


def check_config(cfg: Any, classes: Iterable[type] = ()) -> list[str]:
    """Every problem `tune run` would report before building anything: the settings of ``classes``
    (keys, types, ranges) and the components (imports, argument names and types). Empty when sound."""
    try:
        plain = _plain(cfg)
    except Exception as e:  # a bad ${...} interpolation
        return [f"interpolation: {str(e).splitlines()[0]}"]
    problems = find_setting_problems(plain, classes) if classes else []
    reported = {_problem_key(p) for p in problems}
    return problems + [p for p in find_problems(plain) if _problem_key(p) not in reported]


def _problem_key(problem: str) -> str:
    """The dotted key a problem line starts with (``optimizer.lr='fast' is ...`` -> ``optimizer.lr``)."""
    return re.split(r"[=: ]", problem, maxsplit=1)[0]


def raise_problems(problems: list[str], what: str = "config") -> None:
    """One ConfigError listing ``problems`` (one line each), or nothing."""
    if not problems:
        return
    if len(problems) == 1:
        raise ConfigError(f"{what}: {problems[0]}", FIX)
    raise ConfigError(f"{what} has {len(problems)} problems:\n  " + "\n  ".join(problems), FIX)


def read_settings(cfg: Any, *classes: type) -> tuple[Any, ...]:
    """Check ``cfg`` against ``classes`` (see `check_config`) and return one instance of each, filled
    from it, in the order given; a ConfigError listing every problem otherwise. torchtune keys the
    classes do not read get their one-line note here."""
    raise_problems(check_config(cfg, classes))
    plain = _plain(cfg)
    note_torchtune_keys([key for key in plain if key not in settings_keys(*classes)])
    return tuple(cls(**_read(cls, cfg, plain, [], "")) for cls in classes)
