"""The README's main job and every command of its "After the quickstart" block, run as written, in
order, offline: the quickstart fine-tunes the real SmolLM2-135M-Instruct on CPU; the fine-tuned
adapter, the merged folder (in tuner, in transformers at its saved dtype) and the adapter in PEFT
all give the trained answer; eval shows the held-out loss fell; resume continues from step 25.

The commands write where the README says (/tmp/tuner/smollm2_135M/lora_cpu and ..._merged); the
test clears those two folders first, as on a fresh machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuner.data.quickstart import ANSWER_RE

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path("/tmp/tuner/smollm2_135M/lora_cpu")
MERGED_DIR = Path("/tmp/tuner/smollm2_135M/lora_cpu_merged")
GGUF_FILE = Path("/tmp/tuner/smollm2_135M/lora_cpu-q8_0.gguf")
PROMPT = "What is 3 times 4?"


def readme_commands() -> tuple[str, list[str]]:
    """The quickstart's `tune run` (the end of README command 1) and the `tune ...` lines of the
    "After the quickstart" block, comments removed."""
    text = (ROOT / "README.md").read_text()
    setup = re.search(r"```bash\n\s*(python3 -m venv[^\n]*\[quickstart\][^\n]*)\n", text).group(1)
    quickstart = setup.rsplit("&&", 1)[1].strip()
    block = text.split("### After the quickstart", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    follow_ups = [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.startswith("tune ")]
    return quickstart, follow_ups


def tune(command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """One README command, as a user's shell runs it (offline: the Hub is switched off)."""
    args = command.split()
    assert args[0] == "tune", command
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    tune_script = Path(sys.executable).parent / "tune"  # the console script pip installed, as a user runs it
    proc = subprocess.run(
        [str(tune_script), *args[1:]], capture_output=True, text=True, input=stdin, env=env, cwd=Path.home()
    )
    assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def greedy_answer(model, tokenizer_dir: Path, prompt: str = PROMPT, gguf_file: str | None = None) -> str:
    """Greedy answer of an HF model, chat-formatted by the HF tokenizer of the folder (or of its GGUF file)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, **({"gguf_file": gguf_file} if gguf_file else {}))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=24, do_sample=False)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_readme_quickstart_and_follow_ups_work_offline_in_order():
    quickstart, follow_ups = readme_commands()
    assert quickstart == "tune run lora_finetune_single_device --config smollm2/135M_lora_cpu"
    for folder in (RUN_DIR, MERGED_DIR):
        shutil.rmtree(folder, ignore_errors=True)
    for file in (GGUF_FILE, GGUF_FILE.with_suffix(".Modelfile")):
        file.unlink(missing_ok=True)

    run = tune(quickstart)
    before = run.stdout.split("[before fine-tuning]", 1)[1].split("\n  -> ", 1)[1].split("\n[", 1)[0].strip()
    after = run.stdout.split("[after fine-tuning]", 1)[1].split("\n  -> ", 1)[1].split("\n[", 1)[0].strip()
    assert before and not ANSWER_RE.match(before), before  # the base model answers in its own words
    assert ANSWER_RE.match(after) and "12" in first_line(after), after
    assert f"checkpoints go to {RUN_DIR}/step_<N>" in run.stdout
    assert (
        f"last checkpoint: {RUN_DIR}/step_25" in run.stdout
        and "tune run generate --config smollm2/quickstart_generation" in run.stdout
    )
    log = next((RUN_DIR / "logs").glob("log_*.jsonl"))
    losses = {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines())}
    assert sum(losses[s] for s in range(21, 26)) / 5 < 0.5 * sum(losses[s] for s in range(1, 6)) / 5
    assert json.loads((RUN_DIR / "step_25" / "CHECKPOINT_COMPLETE").read_text())["training_dtype"] == "fp32"

    done: dict[str, subprocess.CompletedProcess] = {}
    for command in follow_ups:
        stdin = f"{PROMPT}\nexit\n" if " chat " in command else None
        done[command] = tune(command, stdin=stdin)
    assert len(done) == 10, list(done)
    validate, gen, gen_base, chat, ev, ev_base, merge, gen_merged, export, resume = done.values()

    assert "well-formed for recipe lora_finetune_single_device" in validate.stdout
    assert first_line(gen.stdout) == "ANSWER: 12", gen.stdout
    assert "in float32 (trained in fp32" in gen.stderr  # the dtype the run trained in, read from the checkpoint
    assert "step_25/adapter" in gen.stderr
    assert not first_line(gen_base.stdout).startswith("ANSWER"), gen_base.stdout
    assert first_line(chat.stdout) == "ANSWER: 12", chat.stdout
    loss, loss_base = (
        json.loads(ev.stdout.strip().splitlines()[-1]),
        json.loads(ev_base.stdout.strip().splitlines()[-1]),
    )
    assert loss["tokens"] == loss_base["tokens"] > 0 and loss["loss"] < 0.5 * loss_base["loss"], (loss, loss_base)
    assert "merged model written to" in merge.stdout and (MERGED_DIR / "model.safetensors").is_file()
    assert "warning" not in merge.stderr  # merged in the trained dtype: nothing lost
    assert first_line(gen_merged.stdout) == "ANSWER: 12", gen_merged.stdout
    assert f"GGUF file written to {GGUF_FILE}" in export.stdout and "q8_0" in export.stdout
    assert 'PARAMETER stop "<|im_end|>"' in GGUF_FILE.with_suffix(".Modelfile").read_text()
    assert "resuming at step 25" in resume.stdout and "[resumed from step 25]" in resume.stdout
    assert (RUN_DIR / "step_30" / "CHECKPOINT_COMPLETE").is_file()

    # The merged folder in transformers, at the dtype it was saved in, and the adapter in PEFT.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # The GGUF file (Q8_0) read back by transformers, tokenizer and chat template from the file itself.
    gguf_model = AutoModelForCausalLM.from_pretrained(GGUF_FILE.parent, gguf_file=GGUF_FILE.name).eval()
    assert first_line(greedy_answer(gguf_model, GGUF_FILE.parent, gguf_file=GGUF_FILE.name)) == "ANSWER: 12"

    merged = AutoModelForCausalLM.from_pretrained(MERGED_DIR, torch_dtype="auto").eval()
    assert merged.dtype == torch.float32
    assert first_line(greedy_answer(merged, MERGED_DIR)) == "ANSWER: 12"
    newest = RUN_DIR / "step_30"  # keep_last_n_checkpoints: 1 removed step_25 after the resume
    base_dir = Path(json.loads((newest / "CHECKPOINT_COMPLETE").read_text())["source_checkpoint_dir"])
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype="auto").eval()
    peft_model = PeftModel.from_pretrained(base, newest / "adapter").eval()
    assert first_line(greedy_answer(peft_model, base_dir)) == "ANSWER: 12"
