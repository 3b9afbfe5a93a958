"""A step's loss and grad norm are read a step late, so the training loop never waits for the GPU
in the middle of training (`tuner.training.step_numbers`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.recipes.helpers import make_hf_checkpoint, write_config
from tuner.config import load_config
from tuner.training.full import FullFinetune
from tuner.training.step_numbers import StepNumbers
from tuner.training.trainer import Trainer


def test_step_numbers_read_tensors_and_plain_values():
    numbers = StepNumbers(3, {"loss": torch.tensor(2.5), "grad_norm": torch.tensor([0.25]), "lr": 1e-4, "none": None})
    assert numbers.step == 3
    assert numbers.read() == {"loss": 2.5, "grad_norm": 0.25, "lr": 1e-4, "none": None}


@pytest.mark.gpu
def test_step_numbers_copy_cuda_scalars_without_waiting_and_read_them_exactly():
    loss = torch.tensor(1.0, device="cuda") / 3
    numbers = StepNumbers(1, {"loss": loss, "grad_norm": torch.tensor(7.0, device="cuda", dtype=torch.bfloat16)})
    loss.add_(1)  # later work on the stream does not change what was taken
    values = numbers.read()
    assert values["loss"] == pytest.approx(1 / 3, rel=1e-7) and values["grad_norm"] == 7.0


def test_training_steps_read_no_scalar_from_the_device(tmp_path, monkeypatch):
    """`.item()` / `float()` on a tensor in tuner's loop would wait for the GPU mid-training (torch's own
    CPU-side uses, such as the step counters of the CPU optimizer here, are not the loop's)."""
    ckpt = make_hf_checkpoint(tmp_path / "hf")
    out = tmp_path / "out"
    cfg = load_config(write_config(tmp_path / "cfg.yaml", ckpt, out, max_steps_per_epoch=4, clip_grad_norm=1.0))
    trainer = Trainer(cfg, FullFinetune())
    trainer.setup()
    calls = []
    real_item, real_float = torch.Tensor.item, torch.Tensor.__float__

    def record(name):
        caller = sys._getframe(2).f_code.co_filename
        if f"{os.sep}tuner{os.sep}" in caller:
            calls.append((name, caller))

    monkeypatch.setattr(torch.Tensor, "item", lambda t: record("item") or real_item(t))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: record("float") or real_float(t))
    saves = []
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self, final=False: saves.append(self.global_step))
    trainer.train()
    assert saves == [4] and calls == []
    rows = [json.loads(line) for line in Path(out, "logs", "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["grad_norm"] > 0 for r in rows)
