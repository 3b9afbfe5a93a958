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


def test_long_context_configs_are_unsloths_setup_at_the_models_context():
    """A ``qlora_long_context`` config per 7-8B family: QLoRA rank 32 on every linear layer, batch 1,
    offloaded activation checkpoints, the sequence-tiled MLP, sequences of the model's whole context."""
    from tuner.config import load_config
    from tuner.models.families import family
    from tuner.registry import recipe_for_config

    gen = _generator()
    rows = [m for m in gen.MODELS if gen.LONG_CONTEXT in m.methods]
    assert {(m.family, m.size) for m in rows} >= {
        ("llama3", "8B"), ("llama3_1", "8B"), ("qwen3", "8B"), ("mistral", "7B"), ("qwen2_5", "7B")
    }  # fmt: skip
    for m in rows:
        name = f"{m.family}/{m.size}_qlora_long_context"
        cfg = load_config(gen.CONFIGS / f"{name}.yaml")
        spec = family(m.family)
        context = spec.decoder_arguments(spec.size_arguments(spec.size(m.size_name)))["max_seq_len"]
        assert recipe_for_config(name).name == "lora_finetune_single_device"
        assert cfg.model._component_ == f"tuner.models.{m.family}.qlora_{m.family}_{m.size_name}"
        assert list(cfg.model.lora_attn_modules) == ["q_proj", "k_proj", "v_proj", "output_proj"]
        assert cfg.model.apply_lora_to_mlp and cfg.model.lora_rank == 32 and cfg.batch_size == 1
        assert cfg.enable_activation_checkpointing and cfg.enable_activation_offloading
        assert cfg.mlp_chunk_size == gen.LONG_MLP_CHUNK and not cfg.compile
        assert cfg.tokenizer.max_seq_len == context >= 8192 and cfg.dataset.packed
