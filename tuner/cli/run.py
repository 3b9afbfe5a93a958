"""`tune run`: split torchrun options from the recipe and its arguments, then run in-process or
hand everything to ``torch.distributed.run``."""

from __future__ import annotations

import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tuner.errors import TunerError, UsageError

# torchrun options that take no value; every other ``--option`` before the recipe takes one.
LAUNCHER_FLAGS = {"--standalone", "--no-python", "--no_python", "-m", "--module", "--run-path", "--run_path"}


@dataclass
class RunArgs:
    launcher: list[str] = field(default_factory=list)
    recipe: str = ""
    recipe_args: list[str] = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return bool(self.launcher)

    def launcher_value(self, *names: str) -> str | None:
        for i, arg in enumerate(self.launcher):
            for name in names:
                if arg == name and i + 1 < len(self.launcher):
                    return self.launcher[i + 1]
                if arg.startswith(name + "="):
                    return arg.split("=", 1)[1]
        return None


def split_run_args(args: list[str]) -> RunArgs:
    """``[torchrun options] <recipe> --config <cfg> [overrides]`` -> its three parts."""
    out = RunArgs()
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if arg == "--config":
            raise UsageError(
                "no recipe given before --config",
                "usage: tune run [torchrun options] <recipe> --config <config> [key=value ...]",
            )
        if "=" in arg or arg in LAUNCHER_FLAGS:
            out.launcher.append(arg)
            i += 1
        elif i + 1 < len(args):
            out.launcher += [arg, args[i + 1]]
            i += 2
        else:
            raise UsageError(f"launcher option {arg} needs a value", "e.g. --nproc_per_node 2")
    if i >= len(args):
        raise UsageError(
            "no recipe given", "usage: tune run [torchrun options] <recipe> --config <config> [key=value ...]"
        )
    out.recipe = args[i]
    out.recipe_args = args[i + 1 :]
    return out


def _process_count(run_args: RunArgs) -> int:
    def as_int(value: str | None, default: int) -> int:
        if value is None:
            return default
        try:
            return int(value.split(":")[-1])  # --nnodes 1:2 means min:max
        except ValueError:
            return default  # torchrun accepts "gpu"/"auto" for nproc_per_node

    nproc = run_args.launcher_value("--nproc_per_node", "--nproc-per-node")
    nprocs = 2 if nproc in ("gpu", "auto", "cpu") else as_int(nproc, 1)
    return nprocs * as_int(run_args.launcher_value("--nnodes"), 1)


def run_recipe(args: list[str]) -> int:
    """Run a recipe as `tune run` does; returns the exit code."""
    from tuner.config import parse_recipe_args
    from tuner.config.settings import check_config, raise_problems
    from tuner.registry import recipe_settings, resolve_config, resolve_recipe

    run_args = split_run_args(args)
    recipe_path, recipe = resolve_recipe(run_args.recipe)
    rest = list(run_args.recipe_args)
    if "--config" not in rest and not any(a.startswith("--config=") for a in rest):
        raise UsageError(f"no config given for recipe {run_args.recipe!r}", "add --config <config-name-or-path.yaml>")
    # Resolve the config name to a path here so torchrun's workers (and the recipe) get a file.
    for i, arg in enumerate(rest):
        if arg == "--config" and i + 1 < len(rest):
            rest[i + 1] = str(resolve_config(rest[i + 1]))
        elif arg.startswith("--config="):
            rest[i] = "--config=" + str(resolve_config(arg.split("=", 1)[1]))

    if not run_args.distributed:
        return _run_in_process(recipe_path, rest)

    if recipe is not None and not recipe.supports_distributed and _process_count(run_args) > 1:
        twin = recipe.name.replace("single_device", "distributed")
        fix = (
            f"use {twin!r} for several processes"
            if "single_device" in recipe.name
            else "run it without --nproc_per_node/--nnodes"
        )
        raise UsageError(f"recipe {recipe.name!r} runs on a single device only", fix)
    raise_problems(
        check_config(parse_recipe_args(rest), recipe_settings(recipe_path))
    )  # fail before starting any worker
    return _launch_torchrun(run_args.launcher, recipe_path, rest)


def _run_in_process(recipe_path: Path, recipe_args: list[str]) -> int:
    saved_argv = sys.argv
    sys.argv = [str(recipe_path), *recipe_args]
    try:
        runpy.run_path(str(recipe_path), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0


def worker_pythonpath(current: str | None) -> str:
    """PYTHONPATH for torchrun's workers: ``current`` with the folder that holds this ``tuner``
    package appended. The workers run the recipe file as a script, so without it a source checkout
    that is not pip-installed fails in every worker with "No module named 'tuner'" while the
    launcher itself ran fine; appended, it never shadows what the user put on PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds tuner/
    paths = [p for p in (current or "").split(os.pathsep) if p]
    return os.pathsep.join(paths if root in paths else [*paths, root])


def _launch_torchrun(launcher: list[str], recipe_path: Path, recipe_args: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        parsed = get_args_parser().parse_args([*launcher, str(recipe_path), *recipe_args])
    except SystemExit:
        raise UsageError(f"bad torchrun options: {' '.join(launcher)}", "see `torchrun --help`") from None
    os.environ["PYTHONPATH"] = worker_pythonpath(os.environ.get("PYTHONPATH"))  # the workers inherit it
    try:
        run(parsed)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        raise TunerError(
            f"rank {rank} failed with exit code {failure.exitcode}; its error is printed above",
        ) from None
    return 0
