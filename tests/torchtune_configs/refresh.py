"""Re-vendor torchtune's shipped configs for the recipes and families tuner has.

    python tests/torchtune_configs/refresh.py /path/to/torchtune/checkout   # at the tag to vendor

Copies each in-scope config of ``recipes/configs`` byte for byte into ``configs/``, torchtune's
LICENSE beside them, and writes ``recipes.json`` (config -> torchtune recipe) from torchtune's own
registry (``torchtune/_recipe_registry.py``). What is in scope: see test_torchtune_configs.py.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = (
    "full_finetune_single_device",
    "full_finetune_distributed",
    "lora_finetune_single_device",
    "lora_finetune_distributed",
    "lora_dpo_single_device",
    "lora_dpo_distributed",
    "full_dpo_distributed",
    "generate",
    "eleuther_eval",
)
FAMILIES = ("gemma2", "llama2", "llama3", "llama3_1", "llama3_2", "llama3_3", "mistral", "phi3", "qwen2_5")


def registry(checkout: Path) -> dict[str, str]:
    """config file path (relative to recipes/configs) -> recipe name, read from the registry's source."""
    tree = ast.parse((checkout / "torchtune" / "_recipe_registry.py").read_text())
    out = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Recipe":
            kw = {k.arg: k.value for k in call.keywords}
            name = ast.literal_eval(kw["name"])
            for cfg in kw["configs"].elts:
                ckw = {k.arg: ast.literal_eval(k.value) for k in cfg.keywords}
                out[ckw["file_path"]] = name
    return out


def main(checkout: str) -> None:
    root = Path(checkout)
    selected = {
        path: recipe
        for path, recipe in sorted(registry(root).items())
        if recipe in RECIPES and ("/" not in path or path.split("/")[0] in FAMILIES)
    }
    shutil.rmtree(HERE / "configs", ignore_errors=True)
    for path in selected:
        dest = HERE / "configs" / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "recipes" / "configs" / path, dest)
    shutil.copyfile(root / "LICENSE", HERE / "LICENSE")
    (HERE / "recipes.json").write_text(json.dumps(selected, indent=1) + "\n")
    print(f"vendored {len(selected)} configs")


if __name__ == "__main__":
    main(sys.argv[1])
