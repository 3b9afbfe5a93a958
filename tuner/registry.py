"""The built-in recipes and configs: what `tune ls` lists and what `tune run/cp/cat` resolve.

Configs are files under ``configs/<family>/<name>.yaml``; which recipe a config belongs to follows
from its name (``*_lora_single_device`` -> lora_finetune_single_device, ``*_full`` ->
full_finetune_distributed, ...), so adding a config file is all it takes to list it.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tuner.errors import ConfigError, UsageError, did_you_mean


@dataclass(frozen=True)
class Recipe:
    name: str
    file: str
    supports_distributed: bool
    config_suffixes: tuple[str, ...]

    @property
    def path(self) -> Path:
        return recipes_dir() / self.file


#: The adapter methods a config name can say (``1B_<method>_single_device``, ``135M_<method>_cpu``).
ADAPTER_METHODS = ("lora", "qlora", "dora", "rslora", "lora_plus", "lora_fa", "pissa", "vera")


def _per_adapter(template: str) -> tuple[str, ...]:
    """Config-name suffixes, one per adapter method (``{m}``) and, when the template has ``{where}``,
    per one-device place (``single_device``, ``cpu``)."""
    places = ("single_device", "cpu") if "{where}" in template else ("",)
    return tuple(template.format(m=m, where=where) for m in ADAPTER_METHODS for where in places)


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "full_finetune_single_device", "full_finetune_single_device.py", False, ("_full_single_device", "_full_cpu")
    ),
    Recipe("full_finetune_distributed", "full_finetune_distributed.py", True, ("_full",)),
    Recipe(
        "lora_finetune_single_device",
        "lora_finetune_single_device.py",
        False,
        (*_per_adapter("_{m}_{where}"), "_qlora_long_context"),
    ),
    Recipe("lora_finetune_distributed", "lora_finetune_distributed.py", True, _per_adapter("_{m}")),
    Recipe("lora_dpo_single_device", "lora_dpo_single_device.py", False, _per_adapter("_{m}_dpo_{where}")),
    Recipe("lora_dpo_distributed", "lora_dpo_distributed.py", True, _per_adapter("_{m}_dpo")),
    Recipe("full_dpo_distributed", "full_dpo_distributed.py", True, ("_full_dpo",)),
    Recipe("generate", "generate.py", False, ("generation",)),
    Recipe("chat", "chat.py", False, ("generation",)),
    Recipe("eval", "eval.py", False, ("evaluation",)),
    Recipe("merge", "merge.py", False, ("merge",)),
    Recipe("export", "export.py", False, ("export",)),
)


# torchtune's recipe names that are tuner recipes under another name.
RECIPE_ALIASES: dict[str, str] = {"eleuther_eval": "eval"}


def _package_dir(package: str, fallback: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / fallback


def recipes_dir() -> Path:
    """Folder of the built-in recipe scripts (inside the wheel: ``tuner/recipes``)."""
    return _package_dir("tuner.recipes", "recipes")


def configs_dir() -> Path:
    """Folder of the built-in YAML configs (inside the wheel: ``tuner/configs``)."""
    return _package_dir("tuner.configs", "configs")


def available_recipes() -> list[Recipe]:
    """Recipes whose script exists (the registry may name recipes still being written)."""
    return [r for r in RECIPES if r.path.is_file()]


def all_configs() -> list[str]:
    """Names (``family/name``, no extension) of every built-in config."""
    root = configs_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def recipe_for_config(config_name: str) -> Recipe | None:
    """The recipe a built-in config belongs to, by its name's suffix (longest suffix wins)."""
    stem = config_name.rsplit("/", 1)[-1]
    best, best_len = None, 0
    for recipe in RECIPES:
        for suffix in recipe.config_suffixes:
            if stem.endswith(suffix) and len(suffix) > best_len:
                best, best_len = recipe, len(suffix)
    return best


def configs_of(recipe: Recipe) -> list[str]:
    return [c for c in all_configs() if recipe_for_config(c) == recipe]


def get_recipe(name: str) -> Recipe | None:
    """The recipe called ``name`` (or, through `RECIPE_ALIASES`, by torchtune's name for it)."""
    name = RECIPE_ALIASES.get(name, name)
    return next((r for r in RECIPES if r.name == name), None)


def resolve_recipe(name_or_path: str) -> tuple[Path, Recipe | None]:
    """The recipe script to run: a built-in name or a path to a .py file."""
    recipe = get_recipe(name_or_path)
    if recipe is not None and recipe.path.is_file():
        return recipe.path, recipe
    path = Path(name_or_path)
    if path.suffix == ".py":
        if path.is_file():
            return path.resolve(), None
        raise UsageError(f"recipe file not found: {path}", "check the path, or run `tune ls` for built-in recipes")
    names = [r.name for r in available_recipes()] + list(RECIPE_ALIASES)
    raise UsageError(
        f"unknown recipe {name_or_path!r}{did_you_mean(name_or_path, names, cutoff=0.5)}",
        "run `tune ls` to list recipes, or pass a path to a .py file",
    )


def resolve_config(name_or_path: str) -> Path:
    """The YAML file to load: an existing path, or a built-in config name (with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    if path.suffix in (".yaml", ".yml") and (path.parent != Path(".") or path.is_absolute()):
        raise ConfigError(f"config file not found: {path}", "check the path, or run `tune ls` for built-in configs")
    name = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    builtin = configs_dir() / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    raise ConfigError(
        f"unknown config {name_or_path!r}{did_you_mean(name, all_configs(), cutoff=0.5)}",
        "run `tune ls` to list configs, or pass a path to a .yaml file",
    )


def recipe_settings(recipe_path: str | Path) -> tuple[type, ...]:
    """The settings classes a recipe file declares (its module-level ``SETTINGS``): the top-level keys
    it reads, which `tune validate` checks a config against. Empty when the file declares none."""
    path = Path(recipe_path)
    spec = importlib.util.spec_from_file_location(f"tuner_recipe_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load recipe file {path}", "pass a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # recipes run their work only under __main__
    return tuple(getattr(module, "SETTINGS", ()))


_RECIPE_FILE = re.compile(r"\b([a-z0-9_]+)\.py\b")
_RUN_LINE = re.compile(r"tune\s+run\s+(?:--\S+\s+\S+\s+)*([A-Za-z0-9_./-]+)\s+--config")


def infer_recipe(config_path: str | Path, cfg: Mapping[str, Any]) -> Recipe | None:
    """The built-in recipe a config is for: by its built-in name, by the ``tune run <recipe> --config``
    line in its comments (built-in and torchtune configs have one, and `tune cp` keeps it), by a
    ``<recipe>.py`` its comments name, or else by its keys. None when nothing tells."""
    path = Path(config_path).resolve()
    root = configs_dir().resolve()
    if path.is_relative_to(root):
        found = recipe_for_config(str(path.relative_to(root).with_suffix("")))
        if found is not None:
            return found
    comments = [line for line in path.read_text(errors="replace").splitlines() if line.lstrip().startswith("#")]
    for line in comments:
        match = _RUN_LINE.search(line)
        if match and get_recipe(match.group(1)) is not None:
            return get_recipe(match.group(1))
    for line in comments:  # torchtune's headers: "# Config for ... in full_finetune_distributed.py"
        for name in _RECIPE_FILE.findall(line):
            if get_recipe(name) is not None:
                return get_recipe(name)
    return _recipe_by_keys(cfg)


_TRAINING_KEYS = ("optimizer", "epochs", "max_steps_per_epoch", "gradient_accumulation_steps", "lr_scheduler", "loss")


def _recipe_by_keys(cfg: Mapping[str, Any]) -> Recipe | None:
    if any(k in cfg for k in _TRAINING_KEYS):
        component = str((cfg.get("model") or {}).get("_component_", ""))
        lora = (
            ".lora_" in component
            or ".qlora_" in component
            or component.rsplit(".", 1)[-1].startswith(("lora_", "qlora_"))
        )
        return get_recipe("lora_finetune_single_device" if lora else "full_finetune_single_device")
    if any(k in cfg for k in ("prompt", "messages", "chat", "max_new_tokens")):
        return get_recipe("generate")
    if any(k in cfg for k in ("tasks", "dataset", "max_batches")):
        return get_recipe("eval")
    if "adapter_dir" in cfg and "output_dir" in cfg and "tokenizer" not in cfg:
        return get_recipe("merge")
    return None
