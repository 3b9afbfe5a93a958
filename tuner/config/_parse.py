"""The recipe entry decorator: ``--config <yaml> [key=value ...] [~key ...]`` -> DictConfig."""
from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

from omegaconf import DictConfig

from tuner.config._loading import apply_overrides, load_config
from tuner.errors import UsageError, run_reporting_errors


def parse_recipe_args(argv: Sequence[str]) -> DictConfig:
    """Read ``--config PATH`` (or ``--config=PATH``) and the overrides that follow it."""
    argv = list(argv)
    config_path, overrides = None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c"):
            if i + 1 >= len(argv):
                raise UsageError("--config needs a value", "pass --config <config-name-or-path.yaml>")
            config_path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
        i += 1
    if config_path is None:
        raise UsageError("no config given", "pass --config <config-name-or-path.yaml>")
    from tuner.registry import resolve_config

    cfg = load_config(resolve_config(config_path))
    return apply_overrides(cfg, overrides)


def parse(recipe_main: Callable[[DictConfig], object]) -> Callable[..., int]:
    """Decorate a recipe's ``main(cfg)`` so ``recipe.py --config x.yaml a=b`` runs it.

    Errors are reported as one ``error:`` line and become the exit code.
    """

    @functools.wraps(recipe_main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        args = sys.argv[1:] if argv is None else argv
        return run_reporting_errors(lambda: recipe_main(parse_recipe_args(args)))

    return wrapper
