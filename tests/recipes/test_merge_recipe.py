"""`tune run merge`: base + PEFT adapter (LoRA/DoRA, and a QLoRA run's adapter) -> one HF folder
that transformers loads with the logits of base + adapter in PEFT; in the saved dtype by default, a
lower one measured; complete folder; bad inputs give clear errors and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.recipes.helpers import (
    checkpointer_node,
    model_node,
    tiny_checkpoint_fixture,
    train_in_process,
    tune_in_process,
)
from tuner.errors import CheckpointError, ConfigError
from tuner.generation.export import merge_checkpoint

ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


def merge_cfg(ckpt: Path, adapter_dir: Path, out: Path, **overrides) -> dict:
    cfg = {
        "model": model_node(),
        "checkpointer": checkpointer_node(ckpt),
        "adapter_dir": str(adapter_dir),
        "output_dir": str(out),
        "device": "cpu",
    }
    cfg.update(overrides)
    return cfg


def _hf(path: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype).eval()


def _peft_logits(ckpt: Path, adapter: Path, tokens: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    with torch.no_grad():
        return PeftModel.from_pretrained(_hf(ckpt), adapter).eval()(tokens).logits


@pytest.fixture(scope="module")
def dora_adapter(ckpt, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dora") / "adapter"
    get_peft_model(
        _hf(ckpt),
        LoraConfig(
            r=4,
            lora_alpha=16,
            use_dora=True,
            init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "down_proj"],
        ),
    ).save_pretrained(folder)
    return folder


TOKENS = torch.randint(0, 49152, (2, 13), generator=torch.Generator().manual_seed(0))


def test_merge_recipe_fp32_matches_peft(ckpt, dora_adapter, tmp_path):
    out = tmp_path / "merged"
    cfg_path = tmp_path / "merge.yaml"
    cfg_path.write_text(json.dumps(merge_cfg(ckpt, dora_adapter, out, dtype="fp32")))
    proc = tune_in_process("run", "merge", "--config", str(cfg_path))
    assert str(out) in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.startswith("adapter") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merge.yaml", "merged"]  # no staging left behind
    manifest = json.loads((out / "CHECKPOINT_COMPLETE").read_text())  # written last: the folder is complete
    assert manifest["format"] == "hf" and manifest["has_model"] and "model.safetensors" in manifest["files"]
    with torch.no_grad():
        merged = _hf(out)(TOKENS).logits
    ref = _peft_logits(ckpt, dora_adapter, TOKENS)
    assert torch.allclose(merged, ref, atol=1e-4), (merged - ref).abs().max()
    with torch.no_grad():
        assert not torch.allclose(_hf(ckpt)(TOKENS).logits, ref, atol=1e-2)  # the adapter matters


def test_merge_keeps_the_saved_dtype_and_measures_a_lower_one(ckpt, dora_adapter, tmp_path, capsys):
    """With no dtype the merge keeps the precision the weights have (here the base's float32: the
    adapter was not trained by tuner); dtype=bf16 casts and says how much the logits moved."""
    from safetensors.torch import load_file

    same = merge_checkpoint(OmegaConf.create(merge_cfg(ckpt, dora_adapter, tmp_path / "same")))
    assert {v.dtype for v in load_file(same / "model.safetensors").values()} == {torch.float32}
    assert "warning" not in capsys.readouterr().err

    out = merge_checkpoint(OmegaConf.create(merge_cfg(ckpt, dora_adapter, tmp_path / "bf16", dtype="bf16")))
    err = capsys.readouterr().err
    assert "[tuner] warning: merging into bfloat16, a lower precision than the float32" in err, err
    assert "changes the logits on a probe sequence by up to" in err and "set dtype=fp32" in err, err
    config = json.loads((out / "config.json").read_text())
    assert "bfloat16" in (config.get("torch_dtype"), config.get("dtype"))
    assert {v.dtype for v in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    with torch.no_grad():
        merged = _hf(out, torch.bfloat16)(TOKENS).logits.float()
    ref = _peft_logits(ckpt, dora_adapter, TOKENS)
    assert (merged - ref).abs().mean() < 0.05 * ref.abs().mean()


def test_cast_and_measure_reports_the_logit_change():
    """The measured change is the difference of the model's own logits before and after the cast."""
    from tuner.generation.export import cast_and_measure
    from tuner.models.smollm2 import smollm2

    torch.manual_seed(0)
    model = smollm2(
        vocab_size=64, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=32, intermediate_dim=48, max_seq_len=64
    ).eval()
    probe = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(probe)
        change = cast_and_measure(model, torch.bfloat16)
        after = model(probe).float()
    assert next(model.parameters()).dtype == torch.bfloat16
    assert change.positions == 32 and 0 < change.max_abs == pytest.approx(float((after - before).abs().max()), rel=1e-6)
    assert change.top1_changed == int((after.argmax(-1) != before.argmax(-1)).sum())


def test_merge_qlora_run_adapter(ckpt, tmp_path):
    """A QLoRA run's adapter (trained over the NF4 base) merged into the dense base = PEFT's
    base + adapter over the dense base."""
    lora = {
        "lora_attn_modules": ["q_proj", "v_proj"],
        "apply_lora_to_mlp": True,
        "lora_rank": 4,
        "lora_alpha": 8,
        "quantize_base": True,
    }
    optimizer = {"_component_": "torch.optim.AdamW", "lr": 1e-2}
    run = dict(max_steps_per_epoch=3, batch_size=2, save_adapter_weights_only=True, optimizer=optimizer)
    train_in_process(tmp_path / "qlora.yaml", ckpt, tmp_path / "run", lora=lora, **run)
    step = tmp_path / "run" / "step_3"
    out = merge_checkpoint(OmegaConf.create(merge_cfg(ckpt, step, tmp_path / "merged", dtype="fp32")))
    with torch.no_grad():
        merged = _hf(out)(TOKENS).logits
    ref = _peft_logits(ckpt, step, TOKENS)
    assert torch.allclose(merged, ref, atol=1e-4), (merged - ref).abs().max()


def test_merge_errors_write_nothing(ckpt, dora_adapter, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        merge_checkpoint(OmegaConf.create(merge_cfg(ckpt, tmp_path / "missing", tmp_path / "a")))
    assert not (tmp_path / "a").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        merge_checkpoint(OmegaConf.create(merge_cfg(ckpt, dora_adapter, tmp_path / "full")))
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="one adapter"):
        merge_checkpoint(
            OmegaConf.create(merge_cfg(ckpt, dora_adapter, tmp_path / "b", adapters={"x": str(dora_adapter)}))
        )
    cfg = OmegaConf.create(merge_cfg(ckpt, dora_adapter, tmp_path / "c"))
    cfg.adapter_dir = "???"
    with pytest.raises(ConfigError, match="adapter_dir is required"):
        merge_checkpoint(cfg)
