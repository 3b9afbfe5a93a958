"""The DPO recipes end to end on CPU: the SFT loop with the preference method. The loss starts at
log 2 (policy = reference), the rewards, reward accuracy and margin are logged each step and on
the held-out split, where the accuracy rises above chance and equals what transformers + PEFT
compute from the saved adapter; only adapters train (LoRA, QLoRA) and the reference stays the base;
full DPO keeps a frozen copy; kill-and-resume is exact; two gloo processes agree with one device.
The preference data is written by the tests (tests/real_data.py: explained answers preferred); the
model is the recipe tests' tiny SmolLM2 shape with a tiny trained ChatML tokenizer (a 622-token
vocabulary keeps the per-sequence log-probs cheap)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.data.tiny_tokenizers import write_qwen_files
from tests.real_data import ALPACA, preference_rows, write_preference_json
from tests.recipes.helpers import logged_losses, make_hf_checkpoint, model_node, tune, tune_in_process, write_config
from tuner.config import instantiate, load_config
from tuner.errors import ConfigError
from tuner.peft import disable_adapter
from tuner.training.dpo import FullDPO, LoRADPO, PreferenceMethod
from tuner.training.trainer import Trainer

LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": True, "lora_rank": 4, "lora_alpha": 8}
BETA = 0.1
HELD_OUT = 24  # the last rows of `preference_rows`
VOCAB = 622  # the tiny Qwen2.5-style tokenizer's, special tokens included


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict:
    return write_qwen_files(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer_files) -> Path:
    return make_hf_checkpoint(
        tmp_path_factory.mktemp("hf_tiny"), initializer_range=0.2, with_tokenizer=False, vocab_size=VOCAB
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory, tokenizer_files) -> tuple[Path, Path, dict]:
    """(train file, held-out file, tokenizer files): the pairs in TRL's text layout, split."""
    rows, folder = preference_rows(), tmp_path_factory.mktemp("pref")
    return (
        write_preference_json(folder / "train.json", rows[:-HELD_OUT]),
        write_preference_json(folder / "val.json", rows[-HELD_OUT:]),
        tokenizer_files,
    )


def _dataset(path: Path) -> dict:
    return {"_component_": "tuner.datasets.preference_dataset", "source": "json", "data_files": str(path)}


def _keys(data: tuple, lora: dict | None = LORA) -> dict:
    """The tiny model and tokenizer, the training pairs and torchtune's DPO loss name."""
    files = data[2]
    tokenizer = {"path": files["vocab"], "merges_file": files["merges"], "max_seq_len": 128}
    return {
        "model": {**model_node(lora), "vocab_size": VOCAB},
        "tokenizer": {"_component_": "tuner.models.qwen2_5.qwen2_5_tokenizer", **tokenizer},
        "dataset": _dataset(data[0]),
        "loss": {"_component_": "torchtune.rlhf.loss.DPOLoss", "beta": BETA},
    }


def _config(tmp_path: Path, ckpt: Path, data: tuple, lora: dict | None = LORA, **overrides) -> Path:
    """A DPO config for the tiny checkpoint."""
    optimizer = {"_component_": "torch.optim.AdamW", "lr": 1e-2}
    keys = {**_keys(data, lora), "optimizer": optimizer, "lr_scheduler": None, **overrides}
    return write_config(tmp_path / "cfg.yaml", ckpt, tmp_path / "out", lora=lora, **keys)


def _train(config: Path, method: PreferenceMethod) -> tuple[Trainer, dict[str, torch.Tensor]]:
    trainer = Trainer(load_config(config), method)
    trainer.setup()
    before = {k: v.detach().clone() for k, v in trainer.decoder.state_dict().items()}
    trainer.train()
    trainer.close()
    return trainer, before


def _logs(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for f in sorted((out / "logs").glob("*.jsonl")) for line in f.read_text().splitlines()]
    merged: dict[int, dict] = {}
    for row in rows:
        merged.setdefault(row["step"], {}).update(row)
    return merged


def _hf_log_probs(model, pairs: list[dict]) -> torch.Tensor:
    """[n, 2] summed log-probs of each pair's chosen and rejected response (prompt masked), by transformers."""
    out = []
    for pair in pairs:
        row = []
        for kind in ("chosen", "rejected"):
            ids = torch.tensor([pair[f"{kind}_input_ids"]])
            labels = torch.tensor(pair[f"{kind}_labels"][1:])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].float()
            picked = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            row.append(picked[labels != -100].sum())
        out.append(torch.stack(row))
    return torch.stack(out)


def test_lora_dpo_learns_the_preference_logs_rewards_and_exports_to_peft(ckpt, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    steps = 6
    config = _config(
        tmp_path,
        ckpt,
        data,
        max_steps_per_epoch=steps,
        dataset_val=_dataset(data[1]),
        run_val_every_n_steps=steps,
    )
    trainer, before = _train(config, LoRADPO())
    after = trainer.decoder.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(".lora_" in k for k in changed), sorted(changed)[:5]

    logs = _logs(tmp_path / "out")
    assert sorted(logs) == list(range(1, steps + 1))
    first, last = logs[1], logs[steps]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)  # the policy starts as the reference
    assert first["rewards/chosen"] == 0 and first["rewards/margins"] == 0
    for key in ("rewards/rejected", "rewards/accuracies", "log_probs/chosen", "log_probs/rejected"):
        assert key in last
    assert last["loss"] < 0.6 and last["rewards/accuracies"] >= 0.75 and last["rewards/margins"] > 0
    assert last["rewards/margins"] == pytest.approx(last["rewards/chosen"] - last["rewards/rejected"], abs=1e-6)

    # Held out: the accuracy is above chance, and it is what transformers + PEFT give from the saved adapter.
    assert last["val_rewards/accuracies"] >= 0.75 and last["val_loss"] < math.log(2)
    tokenizer = instantiate(load_config(config).tokenizer)
    held_out = instantiate(_dataset(data[1]), tokenizer)
    pairs = [held_out[i] for i in range(len(held_out))]
    base = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    reference = _hf_log_probs(base, pairs)
    tokens = torch.tensor([pairs[0]["chosen_input_ids"]])
    with torch.no_grad():
        base_logits = base(tokens).logits  # before PEFT adds the adapters to it
    policy_model = PeftModel.from_pretrained(base, tmp_path / "out" / f"step_{steps}" / "adapter").eval()
    rewards = BETA * (_hf_log_probs(policy_model, pairs) - reference)
    assert len(pairs) == HELD_OUT
    assert rewards[:, 0].mean().item() == pytest.approx(last["val_rewards/chosen"], abs=1e-4)
    assert rewards[:, 1].mean().item() == pytest.approx(last["val_rewards/rejected"], abs=1e-4)
    assert (rewards[:, 0] > rewards[:, 1]).float().mean().item() == pytest.approx(last["val_rewards/accuracies"])

    # The reference is the base: adapters off, the trained model gives the base's logits.
    trainer.decoder.eval()
    with torch.no_grad(), disable_adapter(trainer.decoder):
        assert torch.allclose(trainer.decoder(tokens), base_logits, atol=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / f"step_{steps}", torch_dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(merged(tokens).logits, policy_model(tokens).logits, atol=1e-4)


def test_qlora_dpo_trains_adapters_over_an_nf4_base(ckpt, data, tmp_path):
    from tuner.quantization import has_nf4_weight

    config = _config(tmp_path, ckpt, data, lora={**LORA, "quantize_base": True}, max_steps_per_epoch=3)
    trainer, before = _train(config, LoRADPO())
    assert any(has_nf4_weight(m) for m in trainer.decoder.modules())
    after = trainer.decoder.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if ".lora_" not in k)
    logs = _logs(tmp_path / "out")
    assert logs[1]["loss"] == pytest.approx(math.log(2), abs=1e-6) and logs[3]["rewards/margins"] > 0


@pytest.mark.parametrize("loss", ["IPOLoss", "RSOLoss", "SimPOLoss"])
def test_other_losses_train(ckpt, data, tmp_path, loss):
    config = _config(tmp_path, ckpt, data, max_steps_per_epoch=3, loss={"_component_": f"tuner.rlhf.loss.{loss}"})
    _train(config, LoRADPO())
    logs = _logs(tmp_path / "out")
    assert logs[3]["loss"] < logs[1]["loss"] and logs[3]["rewards/margins"] > logs[1]["rewards/margins"]


def test_full_dpo_trains_every_weight_against_a_frozen_copy(ckpt, data, tmp_path):
    config = _config(
        tmp_path,
        ckpt,
        data,
        lora=None,
        max_steps_per_epoch=3,
        optimizer={"_component_": "torch.optim.AdamW", "lr": 1e-3},
    )
    method = FullDPO()
    trainer, before = _train(config, method)
    after = trainer.decoder.state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in after)
    reference = method.reference.decoder.state_dict()
    assert all(torch.equal(reference[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in method.reference.parameters())
    logs = _logs(tmp_path / "out")
    assert logs[1]["loss"] == pytest.approx(math.log(2), abs=1e-6) and logs[3]["rewards/accuracies"] > 0

    # Resumed, the policy is the checkpoint's and the reference is still the base, not the checkpoint.
    resumed_cfg = load_config(config)
    resumed_cfg.resume_from_checkpoint, resumed_cfg.epochs = True, 2
    resumed_method = FullDPO()
    resumed = Trainer(resumed_cfg, resumed_method)
    resumed.setup()
    resumed.close()
    assert resumed.global_step == 3
    assert all(torch.equal(resumed.decoder.state_dict()[k], after[k]) for k in after)
    reference = resumed_method.reference.decoder.state_dict()
    assert all(torch.equal(reference[k], before[k]) for k in before)


def test_a_language_modelling_loss_or_dataset_is_refused_with_a_fix(ckpt, data, tmp_path, capsys):
    from tuner.cli.run import run_recipe

    ce = {"_component_": "tuner.training.loss.ChunkedCrossEntropyLoss"}
    with pytest.raises(ConfigError, match="not a preference loss"):
        Trainer(load_config(_config(tmp_path, ckpt, data, loss=ce)), LoRADPO()).setup()
    sft = {"_component_": "tuner.datasets.alpaca_dataset", "source": "json", "data_files": str(ALPACA)}
    config = _config(tmp_path, ckpt, data, dataset=sft, max_steps_per_epoch=1)
    assert run_recipe(["lora_dpo_single_device", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "error: the dataset gives samples with keys" in err and "preference_dataset" in err
    assert "Traceback" not in err
    packed = _config(tmp_path, ckpt, data, dataset={**_dataset(data[0]), "packed": True})
    assert run_recipe(["lora_dpo_single_device", "--config", str(packed)]) == 2
    assert "cannot be packed" in capsys.readouterr().err


def test_delta_lora_is_refused_for_lora_dpo_whose_reference_is_the_base(ckpt, data, tmp_path, capsys):
    from tuner.cli.run import run_recipe

    config = _config(tmp_path, ckpt, data, delta_lora_update_ratio=0.5)
    assert run_recipe(["lora_dpo_single_device", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "delta_lora_update_ratio is set for LoRA DPO" in err and "remove delta_lora_update_ratio" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.safetensors"))


@pytest.mark.slow
def test_lora_dpo_kill_and_resume_is_exact(ckpt, data, tmp_path):
    from tests.recipes.helpers import assert_kill_and_resume_exact

    assert_kill_and_resume_exact("lora_dpo_single_device", ckpt, tmp_path, lora=LORA, adapter=True, **_keys(data))


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_dpo_matches_single_device(ckpt, data, tmp_path):
    """LoRA: lora_dpo_distributed (2 gloo processes, 2 pairs each) = lora_dpo_single_device (4 pairs);
    full: full_dpo_distributed = the same method on one device."""
    from safetensors.torch import load_file

    two = ("--nproc_per_node", "2", "--standalone")
    for kind, lora, single_method in (("lora", LORA, LoRADPO()), ("full", None, FullDPO())):
        common = {"max_steps_per_epoch": 3, "shuffle": True, **_keys(data, lora)}
        if kind == "full":
            common["optimizer"] = {"_component_": "torch.optim.AdamW", "lr": 1e-3}
        single_cfg = write_config(tmp_path / f"{kind}_s.yaml", ckpt, tmp_path / f"{kind}_s", lora=lora, **common)
        _train(single_cfg, single_method)
        dist_cfg = write_config(
            tmp_path / f"{kind}_d.yaml", ckpt, tmp_path / f"{kind}_d", lora=lora, batch_size=2, **common
        )
        tune("run", *two, f"{kind}_dpo_distributed", "--config", str(dist_cfg))
        ls, ld = _logs(tmp_path / f"{kind}_s"), _logs(tmp_path / f"{kind}_d")
        assert sorted(ls) == sorted(ld) == [1, 2, 3]
        for step in ls:
            for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
                assert abs(ls[step][key] - ld[step][key]) < 1e-5, (kind, step, key, ls[step][key], ld[step][key])
        name = "adapter/adapter_model.safetensors" if lora else "model.safetensors"
        a, b = load_file(tmp_path / f"{kind}_s" / "step_3" / name), load_file(tmp_path / f"{kind}_d" / "step_3" / name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), kind
    assert logged_losses(tmp_path / "full_d")[3] < math.log(2)


@pytest.mark.slow
def test_smollm2_dpo_quickstart_raises_held_out_reward_accuracy(tmp_path):
    """The shipped CPU config on the real SmolLM2-135M-Instruct, shortened to 4 steps of 2 pairs: on
    the quickstart's held-out questions the implicit reward prefers the explained answer; at the start
    the policy is the reference (every reward 0, accuracy 0). The adapter loads in PEFT."""
    from peft import PeftConfig

    out = tmp_path / "out"
    steps = ["max_steps_per_epoch=4", "run_val_every_n_steps=4", "max_validation_steps=5", "batch_size=2"]
    tune_in_process(
        "run", "lora_dpo_single_device", "--config", "smollm2/135M_lora_dpo_cpu", f"output_dir={out}", *steps
    )
    logs = _logs(out)
    assert logs[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    final = logs[4]  # validation on 10 held-out pairs
    assert final["val_rewards/accuracies"] >= 0.75 and final["val_rewards/margins"] > 0, final
    assert final["val_loss"] < math.log(2)
    assert PeftConfig.from_pretrained(out / "step_4" / "adapter").r == 8
