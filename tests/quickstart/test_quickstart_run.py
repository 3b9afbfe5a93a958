"""README command 1 end to end: the quickstart config fine-tunes the real SmolLM2-135M-Instruct
on CPU; the loss falls and the answer to the held-out demo prompt takes the trained format."""
from __future__ import annotations

import pytest

from tests.recipes.helpers import logged_losses, tune
from tuner.data.quickstart import ANSWER_RE


def _answer(stdout: str, label: str) -> str:
    """The printed answer after ``[label] <prompt>``."""
    text = stdout.split(f"[{label}]", 1)[1].split("\n  -> ", 1)[1]
    return text.split("\n[", 1)[0].strip()


@pytest.mark.slow
def test_quickstart_learns_the_answer_format(tmp_path):
    out = tmp_path / "quickstart"
    run = tune("run", "lora_finetune_single_device", "--config", "smollm2/135M_lora_cpu", f"output_dir={out}",
               "progress_bar=False", "metric_logger.filename=log.jsonl")
    before, after = _answer(run.stdout, "before fine-tuning"), _answer(run.stdout, "after fine-tuning")
    assert before and not ANSWER_RE.match(before), before  # the base model answers in its own words
    assert ANSWER_RE.match(after), after
    assert "12" in after.splitlines()[0]
    losses = logged_losses(out)
    assert sum(losses[s] for s in range(21, 26)) / 5 < 0.5 * sum(losses[s] for s in range(1, 6)) / 5
    assert (out / "step_25" / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "step_25" / "model.safetensors").is_file()
