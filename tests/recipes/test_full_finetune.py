"""`tune run full_finetune_single_device` end to end on CPU against a plain PyTorch loop over the
HF transformers model; saving, reloading in transformers, and exact kill-and-resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.recipes.helpers import ROOT, logged_losses, make_hf_checkpoint, tune, write_config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf_tiny"))


def _reference_losses(ckpt: Path, cfg_path: Path, steps: int) -> list[float]:
    """The same run as a plain loop: HF model, HF scheduler, torch AdamW, tuner's data pipeline."""
    from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

    from tuner.config import instantiate, load_config
    from tuner.data.collate import padded_collate_sft

    cfg = load_config(cfg_path)
    model = LlamaForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32)
    model.train()
    tokenizer = instantiate(cfg.tokenizer)
    dataset = instantiate(cfg.dataset, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    total = min(len(dataset) // cfg.batch_size, cfg.max_steps_per_epoch)
    sched = get_cosine_schedule_with_warmup(opt, cfg.lr_scheduler.num_warmup_steps, total)
    losses = []
    for step in range(steps):
        batch = padded_collate_sft([dataset[i] for i in range(step * 4, step * 4 + 4)], padding_idx=tokenizer.pad_id)
        loss = model(input_ids=batch["tokens"], labels=batch["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        losses.append(loss.item())
    return losses


def test_losses_match_plain_hf_loop_and_output_loads_in_transformers(ckpt, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "cfg.yaml", ckpt, out)
    run = tune("run", "full_finetune_single_device", "--config", str(cfg))
    assert "trainable 100.00%" in run.stdout
    ours = logged_losses(out)
    ref = _reference_losses(ckpt, cfg, 6)
    assert sorted(ours) == [1, 2, 3, 4, 5, 6]
    for step, loss in enumerate(ref, start=1):
        assert abs(ours[step] - loss) < 1e-5, (step, ours[step], loss)

    saved = out / "step_6"
    assert (saved / "config.json").is_file() and (saved / "tokenizer.json").is_file()
    hf = AutoModelForCausalLM.from_pretrained(saved, torch_dtype=torch.float32)
    # The reference loop's weights after the same 6 steps are the same model.
    tokens = torch.randint(0, 49152, (2, 17))
    from tuner.checkpoint import HFCheckpointer
    from tuner.models.smollm2 import smollm2

    ours_model = smollm2(vocab_size=49152, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128, max_seq_len=512)
    sd = HFCheckpointer(checkpoint_dir=saved, checkpoint_files=None, model_type="SMOLLM2", output_dir=tmp_path / "x").load_checkpoint()["model"]
    ours_model.load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(ours_model(tokens), hf(tokens).logits, atol=1e-4)


def test_loss_decreases_on_real_data(ckpt, tmp_path):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "cfg.yaml", ckpt, out, max_steps_per_epoch=30, shuffle=True, batch_size=4,
                       optimizer={"_component_": "torch.optim.AdamW", "lr": 3e-3})
    tune("run", "full_finetune_single_device", "--config", str(cfg), "checkpointer.keep_last_n_checkpoints=1")
    losses = logged_losses(out)
    first = sum(losses[s] for s in range(1, 6)) / 5
    last = sum(losses[s] for s in range(26, 31)) / 5
    assert last < first - 1.0, (first, last)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    step = max(int(p.name.split("_")[1]) for p in out.glob("step_*"))
    return load_file(out / f"step_{step}" / "model.safetensors")


def test_kill_and_resume_is_exact(ckpt, tmp_path):
    straight_out, resumed_out = tmp_path / "straight", tmp_path / "resumed"
    kw = dict(max_steps_per_epoch=5, epochs=2, save_every_n_steps=2, shuffle=True,
              optimizer={"_component_": "torch.optim.AdamW", "lr": 1e-3})
    straight = write_config(tmp_path / "a.yaml", ckpt, straight_out, **kw)
    resumed = write_config(tmp_path / "b.yaml", ckpt, resumed_out, **kw)
    tune("run", "full_finetune_single_device", "--config", str(straight))

    proc = subprocess.Popen([sys.executable, "-m", "tuner.cli.main", "run", "full_finetune_single_device", "--config", str(resumed)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not any(p.name.startswith("step_") for p in resumed_out.glob("step_*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # killed, not returned: mid-step or mid-save
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    from tuner.checkpoint import latest_checkpoint

    assert latest_checkpoint(resumed_out) is not None, "the first checkpoint should exist before the kill"
    again = tune("run", "full_finetune_single_device", "--config", str(resumed), "resume_from_checkpoint=True")
    assert "resuming at step" in again.stdout

    a, b = _final_weights(straight_out), _final_weights(resumed_out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = logged_losses(straight_out), logged_losses(resumed_out)
    assert max(la) == max(lb)
    for step in lb:
        assert la[step] == lb[step], (step, la[step], lb[step])
