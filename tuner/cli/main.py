"""`tune`: list, copy, validate, print and run recipes and configs; download models."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import List, MutableMapping, Optional

import typer

from tuner import __version__
from tuner.errors import ConfigError, UsageError, did_you_mean, run_reporting_errors

app = typer.Typer(
    name="tune",
    help="Fine-tune open-weight LLMs: full, LoRA and its variants, QLoRA; one GPU or many.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tune (tuner) {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors (same as TUNER_DEBUG=1)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    if debug:
        os.environ["TUNER_DEBUG"] = "1"


@app.command("ls")
def ls_cmd(
    all_: bool = typer.Option(False, "--all", help="Also show recipe files and whether they run distributed."),
) -> None:
    """List built-in recipes and their configs."""
    from tuner.registry import available_recipes, configs_of

    rows = []
    for recipe in available_recipes():
        configs = configs_of(recipe) or ["-"]
        extra = [recipe.file, "yes" if recipe.supports_distributed else "no"] if all_ else []
        for i, cfg in enumerate(configs):
            rows.append([recipe.name if i == 0 else "", cfg, *(extra if i == 0 else ["", ""] if all_ else [])])
    header = ["RECIPE", "CONFIG", *(["FILE", "DISTRIBUTED"] if all_ else [])]
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


@app.command("cp")
def cp_cmd(
    source: str = typer.Argument(..., help="Built-in recipe or config name (see `tune ls`)."),
    destination: Path = typer.Argument(..., help="Where to copy it; the extension is added if missing."),
    make_parents: bool = typer.Option(False, "--make-parents", help="Create missing parent folders."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing file."),
) -> None:
    """Copy a built-in recipe (.py, with its fine-tuning method written out) or config (.yaml) to edit it."""
    from tuner.registry import all_configs, available_recipes, configs_dir, get_recipe

    recipe = get_recipe(source)
    name = source[:-5] if source.endswith(".yaml") else source
    if recipe is not None and recipe.path.is_file():
        src, ext = recipe.path, ".py"
    elif name in all_configs():
        src, ext = configs_dir() / f"{name}.yaml", ".yaml"
    else:
        choices = [r.name for r in available_recipes()] + all_configs()
        hint = did_you_mean(source, choices, cutoff=0.5)
        raise UsageError(f"no built-in recipe or config named {source!r}{hint}", "run `tune ls` to list them")
    dest = destination if destination.suffix else destination.with_suffix(ext)
    if dest.exists() and dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not force:
        raise UsageError(f"{dest} already exists", "pass --force to overwrite it")
    if not dest.parent.exists():
        if not make_parents:
            raise UsageError(f"folder {dest.parent} does not exist", "pass --make-parents to create it")
        dest.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".py":
        from tuner.cli.recipe_copy import copied_recipe

        dest.write_text(copied_recipe(src))  # with its fine-tuning method written out to edit
    else:
        shutil.copyfile(src, dest)
    typer.echo(f"Copied {src.name} to {dest}")


@app.command("cat")
def cat_cmd(config: str = typer.Argument(..., help="Built-in config name or path to a .yaml file.")) -> None:
    """Print a config."""
    from tuner.config import load_config
    from tuner.registry import resolve_config

    path = resolve_config(config)
    load_config(path)  # reports bad YAML clearly
    typer.echo(path.read_text().rstrip("\n"))


@app.command("validate")
def validate_cmd(
    config: str = typer.Argument(..., help="Built-in config name or path to a .yaml file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value or ~key overrides to apply first."),
    recipe: Optional[str] = typer.Option(
        None,
        "--recipe",
        help="Recipe the config is for (name or .py file); "
        "default: from the config's name, its `tune run` comment, or its keys.",
    ),
) -> None:
    """Check a config as `tune run` does before building anything: every key known to the recipe,
    every value of the right type and range, every _component_ importable with arguments that bind."""
    from tuner.config import apply_overrides, load_config
    from tuner.config.settings import FIX, check_config
    from tuner.registry import infer_recipe, recipe_settings, resolve_config, resolve_recipe

    path = resolve_config(config)
    cfg = apply_overrides(load_config(path), overrides or [])
    if recipe is not None:
        recipe_path, _ = resolve_recipe(recipe)
        name = recipe
    else:
        found = infer_recipe(path, cfg)
        recipe_path, name = (found.path, found.name) if found is not None else (None, None)
    classes = recipe_settings(recipe_path) if recipe_path is not None else ()
    problems = check_config(cfg, classes)
    if problems:
        raise ConfigError(f"config {config} has {len(problems)} problem(s):\n  " + "\n  ".join(problems), FIX)
    if name is None:
        typer.echo("Config is well-formed! (components only: pass --recipe to also check the top-level keys)")
    else:
        typer.echo(f"Config is well-formed for recipe {name}!")


@app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
)
def run_cmd(ctx: typer.Context) -> None:
    """Run a recipe: tune run [torchrun options] <recipe> --config <config> [key=value ...] [~key ...].

    Without torchrun options (--nproc_per_node, --nnodes, --rdzv-endpoint, ...) the recipe runs in
    this process; with them, torch.distributed.run launches it with the same arguments.
    """
    from tuner.cli.run import run_recipe

    code = run_recipe(list(ctx.args))
    if code:
        raise typer.Exit(code)


@app.command("download")
def download_cmd(
    repo_id: str = typer.Argument(..., help="Hugging Face Hub repo, e.g. meta-llama/Llama-3.2-1B-Instruct."),
    output_dir: Optional[Path] = typer.Option(
        None, "--output-dir", help="Where to put the files (default: /tmp/<model name>)."
    ),
    ignore_patterns: Optional[List[str]] = typer.Option(
        None, "--ignore-patterns", help="Glob of files not to download (repeatable)."
    ),
    hf_token: Optional[str] = typer.Option(None, "--hf-token", envvar="HF_TOKEN", help="Token for gated models."),
) -> None:
    """Download a model from the Hugging Face Hub."""
    from tuner.cli.download import download

    path = download(repo_id, output_dir, ignore_patterns, hf_token)
    typer.echo(f"Downloaded {repo_id} to {path}")


def _click_exceptions(name: str) -> tuple[type, ...]:
    """Click's exception class ``name``, from typer's own copy of click and from click itself."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def wait_passively_between_parallel_ops(environ: MutableMapping[str, str] = os.environ) -> None:
    """Make OpenMP's idle threads sleep at once rather than spin (``OMP_WAIT_POLICY=PASSIVE``)
    unless the user chose a policy; read when torch loads, so called before any import of it.

    A spinning thread holds its core: when anything else runs on the machine (a browser, another
    job), the torch thread that still has work waits for that core, and every parallel op costs a
    scheduler slice. On a busy 2-core machine the quickstart's steps took 1.7-2x as long (an
    RMSNorm forward + backward 40x), with bitwise the same numbers either way (docs/benchmarks.md,
    "CPU quickstart: where the time goes"). On an idle machine sleeping costs a wake-up per op.
    """
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `tune` console script."""
    wait_passively_between_parallel_ops()
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        args = ["--help"]  # bare `tune` shows the help and succeeds
    if "--debug" in args[: args.index("run") if "run" in args else len(args)]:
        os.environ["TUNER_DEBUG"] = "1"

    def invoke() -> int:
        try:
            # Without standalone mode click returns an Exit's code instead of raising it.
            result = app(args=args, prog_name="tune", standalone_mode=False)
            return result if isinstance(result, int) else 0
        except typer.Exit as e:
            return e.exit_code
        except Exception as e:
            if isinstance(e, _click_exceptions("Abort")):
                raise KeyboardInterrupt from None
            if isinstance(e, _click_exceptions("ClickException")):
                raise UsageError(
                    e.format_message(), "run `tune --help` (or `tune <command> --help`) for the usage"
                ) from None
            raise

    return run_reporting_errors(invoke)


if __name__ == "__main__":
    sys.exit(main())
