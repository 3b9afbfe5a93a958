"""`tune cp <recipe> x.py` writes the recipe with its fine-tuning method spelled out (the part a
torchtune user edits in a copied recipe), the loop staying in tuner.training; the copy runs as the
built-in recipe does, and an edit to it takes effect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.recipes.helpers import logged_losses, make_hf_checkpoint, write_config
from tuner.cli.main import main as tune_main
from tuner.cli.recipe_copy import copied_recipe
from tuner.cli.run import run_recipe
from tuner.registry import get_recipe
from tuner.training.trainer import FinetuneMethod

LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": False, "lora_rank": 4, "lora_alpha": 8}
HOOKS = [
    n for n, v in vars(FinetuneMethod).items() if callable(v) and not isinstance(v, type) and not n.startswith("_")
]


@pytest.mark.parametrize(
    ("recipe", "method", "settings"),
    [
        ("full_finetune_single_device", "FullFinetune", "FullSettings"),
        ("full_finetune_distributed", "FullFinetune", "FullSettings"),
        ("lora_finetune_single_device", "LoRAFinetune", "LoRASettings"),
        ("lora_finetune_distributed", "LoRAFinetune", "LoRASettings"),
        ("lora_dpo_single_device", "LoRADPO", "LoRADPOSettings"),
        ("lora_dpo_distributed", "LoRADPO", "LoRADPOSettings"),
        ("full_dpo_distributed", "FullDPO", "DPOSettings"),
    ],
)
def test_the_copy_holds_every_hook_and_not_the_loop(recipe, method, settings):
    text = copied_recipe(get_recipe(recipe).path)
    compile(text, recipe, "exec")
    assert f"class {method}(FinetuneMethod):" in text and not re.search(rf"import .*\b{method}\b", text)
    assert all(f"    def {hook}(self" in text for hook in HOOKS), HOOKS
    assert f"    settings = {settings}" in text  # the method's own config keys travel with it
    assert "def train(" not in text and "from tuner.training.trainer import" in text


def test_copied_lora_recipe_runs_like_the_builtin_and_an_edit_takes_effect(tmp_path, capsys):
    ckpt = make_hf_checkpoint(tmp_path / "hf", initializer_range=0.2)
    copy = tmp_path / "my_recipe.py"
    assert tune_main(["cp", "lora_finetune_single_device", str(copy)]) == 0

    def train(recipe: str, name: str) -> Path:
        out = tmp_path / name
        config = write_config(tmp_path / f"{name}.yaml", ckpt, out, lora=LORA, max_steps_per_epoch=3)
        code = run_recipe([recipe, "--config", str(config)])
        captured = capsys.readouterr()
        assert code == 0, captured.out[-2000:] + captured.err[-2000:]
        return out

    builtin, unedited = train("lora_finetune_single_device", "builtin"), train(str(copy), "copy")
    assert logged_losses(unedited) == logged_losses(builtin)

    # The user's edit: freeze the first layer's adapters as well.
    text = copy.read_text()
    anchor = "        set_trainable_params(model, get_adapter_params(model))\n"
    assert text.count(anchor) == 1
    copy.write_text(
        text.replace(
            anchor,
            anchor + "        for n, p in model.named_parameters():\n"
            '            if n.startswith("layers.0."):\n'
            "                p.requires_grad_(False)\n",
        )
    )
    edited = train(str(copy), "edited")
    from safetensors.torch import load_file

    adapter = load_file(edited / "step_3" / "adapter" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    assert lora_b and all(torch.count_nonzero(v) == 0 for k, v in lora_b.items() if ".layers.0." in k)  # never trained
    assert all(torch.count_nonzero(v) > 0 for k, v in lora_b.items() if ".layers.1." in k)
    assert logged_losses(edited) != logged_losses(builtin)
