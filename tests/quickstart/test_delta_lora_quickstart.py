"""Delta-LoRA on the quickstart task, as shipped (`smollm2/135M_delta_lora_cpu`): the real
SmolLM2-135M-Instruct learns the trained answer format on CPU, and its checkpoint (the merged model,
no adapter) gives that answer in transformers. Slow: 25 steps of the real model (a few minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.quickstart.test_quickstart_run import first_line, greedy_answer, tune
from tuner.data.quickstart import ANSWER_RE

RUN_DIR = Path("/tmp/tuner/smollm2_135M/delta_lora_cpu")


@pytest.mark.slow
def test_delta_lora_learns_the_quickstart_answer_format():
    import shutil

    from transformers import AutoModelForCausalLM

    shutil.rmtree(RUN_DIR, ignore_errors=True)
    run = tune("tune run lora_finetune_single_device --config smollm2/135M_delta_lora_cpu")
    assert "Delta-LoRA: after each optimizer step t > 5" in run.stderr
    after = run.stdout.split("[after fine-tuning]", 1)[1].split("\n  -> ", 1)[1].split("\n[", 1)[0].strip()
    assert ANSWER_RE.match(after) and "12" in first_line(after), after
    log = next((RUN_DIR / "logs").glob("log_*.jsonl"))
    losses = {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines())}
    assert sum(losses[s] for s in range(21, 26)) / 5 < 0.5 * sum(losses[s] for s in range(1, 6)) / 5

    step = RUN_DIR / "step_25"
    assert not (step / "adapter").exists()
    merged = AutoModelForCausalLM.from_pretrained(step, torch_dtype="auto").eval()
    assert first_line(greedy_answer(merged, step)) == "ANSWER: 12"
