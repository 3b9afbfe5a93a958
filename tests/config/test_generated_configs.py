"""The fine-tuning configs under configs/ are exactly what scripts/generate_configs.py writes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_configs", ROOT / "scripts" / "generate_configs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_generated_configs_are_up_to_date(capsys):
    assert _generator().main(["--check"]) == 0, capsys.readouterr().out


def test_every_generated_config_names_its_recipe_in_the_registry():
    from tuner.registry import recipe_for_config

    gen = _generator()
    for path in gen.expected_files():
        name = str(path.relative_to(gen.CONFIGS).with_suffix(""))
        recipe = recipe_for_config(name)
        assert recipe is not None and "tune run" in path.read_text() and recipe.name in path.read_text(), name
