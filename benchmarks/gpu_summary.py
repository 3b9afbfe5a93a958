"""One line per job of ``scripts/gpu_parity_and_context.sh``: each workload's speed next to its loss
parity, and each memory cap's longest context (from the job's JSON, or, for a job cut short, from
the probes its log recorded).

    python3 -m benchmarks.gpu_summary OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROBE_PREFIX = "probe: cap "


def _result(path: Path) -> dict[str, Any] | None:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    except OSError:
        return None
    return json.loads(lines[-1]) if lines else None


def parity_line(name: str, r: dict[str, Any]) -> str:
    """Speed and loss parity of one ``--compare-torchtune`` result."""
    tt = r.get("torchtune", {})
    head = f"{name}: tuner {r['tokens_per_s_median']:,.0f} tokens/s"
    if tt.get("error"):
        return f"{head}; torchtune failed: {tt['error']}"
    head += f", torchtune {tt.get('tokens_per_s_median', 0):,.0f} ({r.get('ratio_tokens_per_s_torchtune')}x)"
    p = r.get("loss_parity") or {}
    vs = p.get("tuner_vs_torchtune")
    if not vs:
        return f"{head}; loss parity: {p.get('error', 'not measured')}"
    bound = p.get("noise_bound_max_abs_diff")
    exact = r.get("nf4_exact")  # --nf4-exact-weights: both tools start from the same dequantized weights
    return (
        f"{head}; loss parity over {vs['steps']} steps: max |diff| {vs['max_abs_diff']:.4g} at step {vs['at_step']} "
        f"(step 1: {abs(vs['first_loss'][0] - vs['first_loss'][1]):.3g}; "
        f"losses {vs['first_loss'][0]:.3f} -> {vs['last_loss'][0]:.3f}); torchtune-vs-torchtune bound "
        f"{'not measured' if bound is None else f'{bound:.4g}'}; within bound: {p.get('within_noise')}"
        + (
            f"; nf4-exact weights, tuner's NF4 entries differing from them: {exact['entries_differing']} "
            f"of {exact['nf4_weights']} weights"
            if exact
            else ""
        )
    )


def context_line(cap: str, entry: dict[str, Any]) -> str:
    """The longest context of one cap, with the goal and the best probe's figures."""
    best = entry.get("best") or {}
    found = f"{entry['longest']:,}" if entry.get("longest") else "none"
    failing = f"{entry['first_failing']:,}" if entry.get("first_failing") else "none probed"
    text = f"cap {cap} GiB: longest that trained {found} tokens (first that did not: {failing})"
    if best:
        text += (
            f", {best.get('tokens_per_s') or 0:,.0f} tokens/s, peak {best.get('peak_alloc_gib')} GiB GPU, "
            f"{best.get('host_peak_rss_gib')} GiB host"
        )
    goal = entry.get("goal_tokens")
    if goal:
        text += f"; goal {goal:,} (unsloth {entry.get('unsloth_tokens'):,}): met {entry.get('goal_met')}"
    if not entry.get("complete", False):
        text += f"; search not complete ({entry.get('stopped') or 'cut short'})"
    return text


def probes_from_log(path: Path) -> dict[str, dict[str, Any]]:
    """A cut-short max-context job's probes (its log's ``probe: cap C GiB {...}`` lines), per cap."""
    caps: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return caps
    for line in lines:
        if line.startswith(PROBE_PREFIX):
            cap, _, rest = line[len(PROBE_PREFIX) :].partition(" GiB ")
            p = json.loads(rest)
            e = caps.setdefault(cap, {"longest": None, "first_failing": None, "complete": False, "best": None})
            if p["fits"] and (e["longest"] is None or p["seq_len"] > e["longest"]):
                e["longest"], e["best"] = p["seq_len"], p
            elif p["fits"] is False and (e["first_failing"] is None or p["seq_len"] < e["first_failing"]):
                e["first_failing"] = p["seq_len"]
            elif p["fits"] is None:
                e["stopped"] = f"probe at {p['seq_len']}: {p['error']}"
    return caps


def summary(out: Path) -> list[str]:
    lines = []
    for log in sorted(out.glob("*.log")):
        name = log.stem
        result = _result(out / f"{name}.json")
        if name.startswith("parity_"):
            skipped = log.read_text().strip() if result is None else ""
            lines.append(parity_line(name, result) if result else f"{name}: no result ({skipped[-300:]})")
        elif name.startswith("context_"):
            caps = result["caps_gib"] if result else probes_from_log(log)
            lines += [context_line(cap, e) for cap, e in caps.items()] or [f"{name}: no probe finished"]
    return lines


if __name__ == "__main__":
    print("\n".join(summary(Path(sys.argv[1]))))
