"""The recipe entry decorator: ``--config <yaml> [key=value ...] [~key ...]`` -> DictConfig."""

from __future__ import annotations

import argparse
import functools
import sys
from argparse import Namespace
from typing import Any, Callable, NoReturn, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from tuner.config._loading import apply_overrides, load_config
from tuner.errors import ConfigError, UsageError, run_reporting_errors
from tuner.registry import resolve_config


class TuneRecipeArgumentParser(argparse.ArgumentParser):
    """A recipe's command line (torchtune's parser): ``--config <name or path>`` (``-c``) and overrides.

    ``parse_known_args`` returns the config's top-level keys as the namespace (uninterpolated) and
    the overrides (``key=value``, ``~key``) left to apply; other ``--flags`` are refused.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        super().add_argument(
            "--config", "-c", type=str, required=True, help="config name (`tune ls`) or path to a YAML file"
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, "pass --config <config-name-or-path.yaml> followed by key=value overrides")

    def parse_known_args(
        self, args: Optional[Sequence[str]] = None, namespace: Optional[Namespace] = None
    ) -> tuple[Namespace, list[str]]:
        ns, unknown = super().parse_known_args(args, namespace)
        flags = [a for a in unknown if a.startswith("--")]
        if flags:
            raise UsageError(
                f"Additional flag arguments not supported: {flags}. Please use --config or key=value overrides",
                "write options as key=value (e.g. batch_size=8)",
            )

        config = load_config(resolve_config(ns.config))
        if "config" in config:
            raise ConfigError("a config file cannot have a top-level key 'config'", "rename that key")
        self.set_defaults(**OmegaConf.to_container(config, resolve=False))
        ns, unknown = super().parse_known_args(args, namespace)
        del ns.config
        return ns, unknown


def parse_recipe_args(argv: Sequence[str]) -> DictConfig:
    """Read ``--config PATH`` (or ``--config=PATH``) and apply the overrides that follow it."""
    config, overrides = TuneRecipeArgumentParser(prog="recipe").parse_known_args(list(argv))
    return apply_overrides(OmegaConf.create(vars(config)), overrides)


def parse(recipe_main: Callable[[DictConfig], object]) -> Callable[..., NoReturn]:
    """Decorate a recipe's ``main(cfg)`` so ``recipe.py --config x.yaml a=b`` runs it.

    The wrapper exits the process (torchtune's behaviour): errors are reported as one ``error:``
    line and become the exit code.
    """

    @functools.wraps(recipe_main)
    def wrapper(argv: Sequence[str] | None = None) -> NoReturn:
        args = sys.argv[1:] if argv is None else list(argv)
        sys.exit(run_reporting_errors(lambda: recipe_main(parse_recipe_args(args))))

    return wrapper
