"""The summary of scripts/gpu_parity_and_context.sh's jobs: speed next to loss parity, each cap's
longest context, and what a job cut short had found (its probe lines)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks.gpu_summary import summary

ROOT = Path(__file__).resolve().parents[2]

PARITY = {
    "workload": "lora_1b",
    "tokens_per_s_median": 70000.0,
    "ratio_tokens_per_s_torchtune": 1.1,
    "torchtune": {"tokens_per_s_median": 63636.4},
    "loss_parity": {
        "tuner_vs_torchtune": {
            "steps": 100,
            "max_abs_diff": 0.0123,
            "at_step": 57,
            "first_loss": [11.9, 11.9],
            "last_loss": [3.2, 3.21],
        },
        "noise_bound_max_abs_diff": 0.02,
        "within_noise": True,
    },
}
BEST = {"seq_len": 65536, "fits": True, "tokens_per_s": 2100.0, "peak_alloc_gib": 15.1, "host_peak_rss_gib": 30.2}
CONTEXT = {
    "caps_gib": {
        "16": {
            "longest": 65536,
            "first_failing": 69632,
            "complete": True,
            "best": BEST,
            "goal_tokens": 61086,
            "unsloth_tokens": 40724,
            "goal_met": True,
        }
    }
}


def test_summary_puts_speed_next_to_parity_and_reads_cut_short_jobs(tmp_path):
    (tmp_path / "parity_lora_1b.json").write_text("[tuner] note\n" + json.dumps(PARITY) + "\n")
    (tmp_path / "parity_lora_1b.log").write_text("")
    (tmp_path / "context_16.json").write_text(json.dumps(CONTEXT) + "\n")
    (tmp_path / "context_16.log").write_text("")
    (tmp_path / "context_48.json").write_text("")  # killed before its JSON: the probes it logged
    (tmp_path / "context_48.log").write_text(
        "probe: cap 48 GiB " + json.dumps({**BEST, "seq_len": 290816}) + "\n"
        "probe: cap 48 GiB " + json.dumps({"seq_len": 409600, "fits": False, "error": "out of memory"}) + "\n"
    )
    (tmp_path / "parity_qlora_8b.log").write_text("skipped: no torchtune")
    exact = {**PARITY, "workload": "qlora_8b", "nf4_exact": {"nf4_weights": 192, "entries_differing": 0}}
    (tmp_path / "parity_qlora_8b_nf4_exact.json").write_text(json.dumps(exact) + "\n")
    (tmp_path / "parity_qlora_8b_nf4_exact.log").write_text("")
    lines = summary(tmp_path)
    assert lines[0].startswith("cap 16 GiB: longest that trained 65,536 tokens (first that did not: 69,632)")
    assert "goal 61,086 (unsloth 40,724): met True" in lines[0] and "15.1 GiB GPU, 30.2 GiB host" in lines[0]
    assert lines[1].startswith("cap 48 GiB: longest that trained 290,816 tokens (first that did not: 409,600)")
    assert "search not complete" in lines[1]
    assert lines[2].startswith("parity_lora_1b: tuner 70,000 tokens/s, torchtune 63,636 (1.1x); loss parity over 100")
    assert "max |diff| 0.0123 at step 57" in lines[2] and "bound 0.02; within bound: True" in lines[2]
    assert "(step 1: 0; losses 11.900 -> 3.200)" in lines[2] and "nf4-exact" not in lines[2]
    assert lines[3] == "parity_qlora_8b: no result (skipped: no torchtune)"
    assert lines[4].endswith("; nf4-exact weights, tuner's NF4 entries differing from them: 0 of 192 weights")


def test_the_gpu_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_parity_and_context.sh")], check=True)
