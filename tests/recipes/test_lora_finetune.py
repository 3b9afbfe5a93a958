"""`lora_finetune_single_device` end to end on CPU: only adapters train, the loss falls on real
data, the saved adapter loads in PEFT (every variant PEFT has) and the merged folder in
transformers with tuner's logits, QLoRA included, and kill-and-resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.recipes.helpers import (
    LORA,
    logged_losses,
    optimizer_node,
    tiny_checkpoint_fixture,
    write_config,
)
from tuner.config import instantiate, load_config
from tuner.training.lora import LoRAFinetune
from tuner.training.trainer import Trainer

ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


def _train(tmp_path: Path, ckpt: Path, lora: dict, **overrides) -> tuple[Trainer, dict[str, torch.Tensor]]:
    """Run the LoRA recipe's trainer in-process; return it and the weights it started from."""
    cfg = load_config(write_config(tmp_path / "cfg.yaml", ckpt, tmp_path / "out", lora=lora, **overrides))
    trainer = Trainer(cfg, LoRAFinetune())
    trainer.setup()
    before = {k: v.detach().clone() for k, v in trainer.decoder.state_dict().items()}
    trainer.train()
    trainer.close()
    return trainer, before


def _peft_logits(ckpt: Path, adapter_dir: Path, tokens: torch.Tensor, base_state: dict | None = None) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32)
    if base_state is not None:
        base.load_state_dict(base_state, strict=False)
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with torch.no_grad():
        return model(tokens).logits


def test_only_adapters_change_loss_falls_and_outputs_load(ckpt, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer, before = _train(
        tmp_path,
        ckpt,
        LORA,
        max_steps_per_epoch=15,
        shuffle=True,
        optimizer=optimizer_node(1e-2),
    )
    after = trainer.decoder.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(".lora_" in k for k in changed), sorted(changed)[:5]
    assert any(k.endswith("lora_b.weight") for k in changed)

    losses = logged_losses(tmp_path / "out")
    assert sorted(losses) == list(range(1, 16))
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(11, 16)) / 5
    assert last < first - 0.5, (first, last)

    step = tmp_path / "out" / "step_15"
    tokens = torch.randint(0, 49152, (2, 19))
    trainer.decoder.eval()
    with torch.no_grad():
        ours = trainer.decoder(tokens)
    assert torch.allclose(_peft_logits(ckpt, step / "adapter", tokens), ours, atol=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(step, torch_dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(merged(tokens).logits, ours, atol=1e-4)


@pytest.mark.parametrize(
    "variant",
    [
        {"use_dora": True},
        {"use_rslora": True},
        {"init_lora_weights": "pissa"},
        {"use_vera": True, "lora_rank": 16},
    ],
)
def test_variants_train_and_export_to_peft(ckpt, tmp_path, variant):
    lora = {**LORA, "apply_lora_to_mlp": False, **variant}
    trainer, _ = _train(
        tmp_path,
        ckpt,
        lora,
        max_steps_per_epoch=3,
        save_adapter_weights_only=True,
        optimizer=optimizer_node(1e-2),
    )
    tokens = torch.randint(0, 49152, (2, 13))
    trainer.decoder.eval()
    with torch.no_grad():
        ours = trainer.decoder(tokens)
    step = tmp_path / "out" / "step_3"
    assert not (step / "model.safetensors").exists()  # save_adapter_weights_only
    assert torch.allclose(_peft_logits(ckpt, step, tokens), ours, atol=1e-4)


def test_lora_fa_trains_only_b(ckpt, tmp_path):
    trainer, before = _train(tmp_path, ckpt, {**LORA, "lora_fa": True}, max_steps_per_epoch=2)
    after = trainer.decoder.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.endswith("lora_a.weight"))
    assert any(not torch.equal(after[k], before[k]) for k in after if k.endswith("lora_b.weight"))


def test_lora_plus_gives_b_a_higher_learning_rate(ckpt, tmp_path):
    trainer, _ = _train(tmp_path, ckpt, LORA, max_steps_per_epoch=1, lora_plus_ratio=4.0, lr_scheduler=None)
    names = {id(p): n for n, p in trainer.decoder.named_parameters()}
    lr_of = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            lr_of[names[id(p)].rsplit(".", 2)[-2]] = group["lr"]
    assert lr_of["lora_a"] == pytest.approx(2e-3) and lr_of["lora_b"] == pytest.approx(8e-3)


def test_qlora_trains_and_adapter_loads_in_peft_over_dequantized_base(ckpt, tmp_path):
    from tuner.checkpoint.hf_keys import tuner_to_hf
    from tuner.quantization import dequantized_state_dict, has_nf4_weight

    trainer, before = _train(
        tmp_path,
        ckpt,
        {**LORA, "quantize_base": True},
        max_steps_per_epoch=3,
        enable_activation_checkpointing=True,
        optimizer=optimizer_node(1e-2),
    )
    assert any(has_nf4_weight(m) for m in trainer.decoder.modules())
    after = trainer.decoder.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if ".lora_" not in k)
    tokens = torch.randint(0, 49152, (2, 11))
    trainer.decoder.eval()
    with torch.no_grad():
        ours = trainer.decoder(tokens)
    dense = {k: v for k, v in dequantized_state_dict(trainer.decoder).items() if ".lora_" not in k}
    import json

    hf_config = json.loads((ckpt / "config.json").read_text())
    hf_dense = tuner_to_hf(dense, "SMOLLM2", hf_config)
    peft_logits = _peft_logits(ckpt, tmp_path / "out" / "step_3" / "adapter", tokens, base_state=hf_dense)
    assert torch.allclose(peft_logits, ours, atol=1e-4)
    # The merged model (dequantized base + adapters) loads in transformers with the same logits.
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "step_3", torch_dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(merged(tokens).logits, ours, atol=1e-4)


def test_lora_kill_and_resume_is_exact(ckpt, tmp_path):
    from tests.recipes.helpers import assert_kill_and_resume_exact

    assert_kill_and_resume_exact("lora_finetune_single_device", ckpt, tmp_path, lora=LORA, adapter=True)


def test_qlora_keeping_dense_weights_for_backward_changes_no_loss(ckpt, tmp_path):
    from tuner.quantization import has_nf4_weight

    common = {
        "max_steps_per_epoch": 2,
        "enable_activation_checkpointing": True,
        "optimizer": optimizer_node(1e-2),
    }
    (tmp_path / "plain").mkdir()
    (tmp_path / "kept").mkdir()
    plain, _ = _train(tmp_path / "plain", ckpt, {**LORA, "quantize_base": True}, **common)
    kept, _ = _train(
        tmp_path / "kept", ckpt, {**LORA, "quantize_base": True}, nf4_keep_dense_for_backward=True, **common
    )
    flags = lambda t: {getattr(m, "_nf4_save_dense", False) for m in t.decoder.modules() if has_nf4_weight(m)}  # noqa: E731
    assert flags(plain) == {False} and flags(kept) == {True}
    for a, b in zip(plain.decoder.parameters(), kept.decoder.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


VARIANT_SIGNS = {  # what the saved adapter_config.json says for each variant config
    "lora": {"peft_type": "LORA", "use_dora": False, "use_rslora": False},
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "lora_plus": {"peft_type": "LORA"},
    "lora_fa": {"peft_type": "LORA"},
    "pissa": {"peft_type": "LORA"},
    "vera": {"peft_type": "VERA"},
}


@pytest.mark.parametrize("variant", sorted(VARIANT_SIGNS))
def test_every_variant_config_trains_and_saves_its_variant(variant, ckpt, tmp_path, capsys):
    """`smollm2/135M_<variant>_cpu` as shipped, with only the model's size, the checkpoint, the data
    and the step count overridden, trains two steps and saves an adapter of that variant."""
    from tests.recipes.helpers import model_node, shipped_quickstart_args
    from tuner.cli.main import main

    dims = {k: v for k, v in model_node().items() if k != "_component_"}
    out = tmp_path / "out"
    args = shipped_quickstart_args(variant, ckpt, out)
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((out / "step_2" / "adapter" / "adapter_config.json").read_text())
    for key, value in VARIANT_SIGNS[variant].items():
        assert config.get(key) == value, (variant, key, config.get(key))
    shipped = load_config(Path(__file__).resolve().parents[2] / "configs" / "smollm2" / f"135M_{variant}_cpu.yaml")
    layer = _first_adapter_layer(
        instantiate(
            {**OmegaConf.to_container(shipped.model), **dims, "_component_": "tuner.models.smollm2.lora_smollm2"}
        )
    )
    expected = {
        "lora_fa": ("lora_fa", True),
        "pissa": ("init_lora_weights", "pissa"),
        "dora": ("use_dora", True),
        "rslora": ("use_rslora", True),
    }.get(variant)
    if expected is not None:
        assert getattr(layer, expected[0]) == expected[1]
    assert (shipped.get("lora_plus_ratio") == 16) == (variant == "lora_plus")


def _first_adapter_layer(model):
    from tuner.peft import LoRALinear, VeRALinear

    return next(m for m in model.modules() if isinstance(m, (LoRALinear, VeRALinear)))
