"""`tune run full_finetune_single_device` end to end on CPU against a plain PyTorch loop over the
HF transformers model; saving, reloading in transformers, and exact kill-and-resume."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.recipes.helpers import (
    logged_losses,
    optimizer_node,
    tiny_checkpoint_fixture,
    tune_in_process,
    write_config,
)

ckpt = tiny_checkpoint_fixture()


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
    run = tune_in_process("run", "full_finetune_single_device", "--config", str(cfg))
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

    ours_model = smollm2(
        vocab_size=49152, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128, max_seq_len=512
    )
    sd = HFCheckpointer(
        checkpoint_dir=saved, checkpoint_files=None, model_type="SMOLLM2", output_dir=tmp_path / "x"
    ).load_checkpoint()["model"]
    ours_model.load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(ours_model(tokens), hf(tokens).logits, atol=1e-4)


def test_loss_decreases_on_real_data(ckpt, tmp_path):
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path / "cfg.yaml", ckpt, out, max_steps_per_epoch=15, shuffle=True, optimizer=optimizer_node(3e-3)
    )
    tune_in_process(
        "run", "full_finetune_single_device", "--config", str(cfg), "checkpointer.keep_last_n_checkpoints=1"
    )
    losses = logged_losses(out)
    assert sorted(losses) == list(range(1, 16))
    first = sum(losses[s] for s in range(1, 6)) / 5
    last = sum(losses[s] for s in range(11, 16)) / 5
    assert last < first - 1.0, (first, last)


def test_kill_and_resume_is_exact(ckpt, tmp_path):
    from tests.recipes.helpers import assert_kill_and_resume_exact

    assert_kill_and_resume_exact("full_finetune_single_device", ckpt, tmp_path)
