"""The FP8-base measurements of issue #27 in one GPU call, within a time budget.

    eval "$(bash scripts/device_setup.sh)"            # torchtune's wheels, for --compare-torchtune
    python3 scripts/gpu_fp8.py final 500              # PLAN BUDGET_S; results in $OUT (default /tmp/gpu_out)

Plans (docs/benchmarks.md, "LoRA over an FP8 base"):

- ``dev``: whether ``torch._scaled_mm`` takes 1 x 128 block scales here; a profiled FP8 LoRA 1B
  step; the speed of the ``fp8_fwd`` recipe; the 300-step quality runs of bf16 (two LoRA seeds),
  ``fp8_all`` and ``fp8_fwd``.
- ``final``: FP8 (``fp8_all``) and bf16 LoRA 1B, then the quality runs of ``dev`` on the 512-state
  chain (below): what fitted in session 8's device time.
- ``side_by_side``: one after the other: torchtune compile and tuner bf16 LoRA 1B
  (``--compare-torchtune``), tuner FP8 LoRA 1B, LoRA 8B FP8, QLoRA 8B, bf16 LoRA 8B (speed only:
  ``final`` measured the quality runs on the same code).
- ``next`` (session 9's code, ``python3 scripts/gpu_fp8.py next 470``: one call, <= 8 min with compile):
  LoRA 1B bf16, then FP8 with each new option alone and both (``fp8_shared_input``: one quantization
  of q/k/v's and gate/up's input, on by default; ``fp8_output``: the loss's logits GEMM in FP8), then
  LoRA 8B FP8 with both if the budget still allows; then 300-step quality of bf16, bf16 seed 1, FP8
  and FP8 + ``fp8_output`` (``fp8_shared_input`` changes no number, so it needs no quality run), from
  which the next session sets the defaults.
- ``qlora_fused`` (session 12): ``qlora``'s three speed runs after the fused NF4 -> e4m3 kernel, and a
  profiled ``fp8_all`` run (its trace summary in the job's log).
- ``long`` (session 13): QLoRA 8B at 1 x 16,384 in bf16 and (profiled) ``fp8_all``, then LoRA 1B FP8 +
  ``fp8_output`` and LoRA 8B FP8 again (issue #27's goals) with the static launcher of session 12.
- ``qlora8b_quality`` (session 13): a profiled LoRA 1B FP8 + ``fp8_output`` step, then 160-step quality
  runs of QLoRA 8B (bf16, bf16 seed 1, ``fp8_all``) on the chain below, all three at once.
- ``loss_kernel`` (session 14): the 300-step quality runs of bf16, bf16 seed 1 and FP8 + ``fp8_output``
  (whose loss chunk is now one Triton kernel, `tuner.training.loss_triton`), all at once.
- ``seeds`` (session 14): those runs plus FP8 + ``fp8_output`` with seed 1, so that each FP8 run has a
  bf16 run of its own LoRA init, and each arm's curve averaged over its two seeds is compared too.
- ``qlora`` (``python3 scripts/gpu_fp8.py qlora 470``: three 8B runs with compile, ~3-4 min): QLoRA 8B
  (``qlora_8b``: NF4 base, r8, activation checkpointing, 2 x 2048) as shipped (bf16 GEMMs), then with
  ``model.base_dtype=fp8`` (= ``fp8_all``: NF4 storage, forward and input-gradient GEMMs in FP8) and
  ``fp8_fwd`` (input gradient in bf16): speed and memory; then the 300-step quality runs on QLoRA 1B
  (``qlora_1b``): bf16 GEMMs, the same with seed 1 (the noise reference), FP8 GEMMs (``fp8_all``).

Speed runs go one at a time (the GPU to itself); the quality runs then all at once (their losses do
not depend on what else runs; their tokens/s does, and is not reported). A job that would start with
too little of the budget left is skipped. Writes ``results.json`` (every job's benchmark JSON, after
each job, so a call cut short still returns what finished), ``summary.txt`` (speed table, quality gaps
against the bf16 run: `benchmarks.parity.curve_gap`) and ``log.txt`` (the end of each job's stderr).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEED_1B = ["--steps", "20", "--warmup", "6"]
SPEED_8B = ["--steps", "14", "--warmup", "6"]
SPEED_16K = ["--seq-len", "16384", "--batch-size", "1", "--steps", "8", "--warmup", "3"]
# 300 steps of 2 x 2048 on a 512-state chain of `benchmarks.parity.learnable_tokens` (entropy 1.21
# nats), made in memory, from the model's own random init (RandomInitCheckpointer: the 1B learns it in
# ~150 steps; the std-0.02 checkpoint of --learnable-data sat on a plateau near ln(vocab) for 150+
# steps, where two bf16 seeds left it 100 steps apart: the dev call of session 8)
QUALITY = ["--warmup", "8", "--batch-size", "2"]
QUALITY_OVERRIDES = [
    "compile=True",
    "optimizer.lr=1e-3",
    "dataset._component_=benchmarks.parity.learnable_dataset",
    "dataset.states=512",
]


def _speed(workload: str, steps: list[str], *extra: str, overrides: tuple[str, ...] = ()) -> list[str]:
    return ["--workload", workload, *steps, *extra, "compile=True", *overrides]


def _quality(*overrides: str, workload: str = "lora_1b", steps: int = 300) -> list[str]:
    return ["--workload", workload, "--steps", str(steps), *QUALITY, *QUALITY_OVERRIDES, *overrides]


RECIPE_QUALITY = [  # bf16, the noise reference (another LoRA init), and both FP8 recipes
    ("quality_bf16", _quality()),
    ("quality_bf16_seed1", _quality("seed=1")),
    ("quality_fp8_all", _quality("model.base_dtype=fp8_all")),
    ("quality_fp8_fwd", _quality("model.base_dtype=fp8_fwd")),
]
QLORA_QUALITY = [  # the same 300 steps with an NF4 base (QLoRA 1B): bf16 GEMMs, a seed-1 reference, FP8 GEMMs
    ("quality_qlora_bf16", _quality(workload="qlora_1b")),
    ("quality_qlora_bf16_seed1", _quality("seed=1", workload="qlora_1b")),
    ("quality_qlora_fp8_all", _quality("model.base_dtype=fp8_all", workload="qlora_1b")),
]
QLORA_8B_QUALITY = [  # the same on QLoRA 8B, 160 steps (three 8B runs share the GPU)
    ("quality_qlora8b_bf16", _quality(workload="qlora_8b", steps=160)),
    ("quality_qlora8b_bf16_seed1", _quality("seed=1", workload="qlora_8b", steps=160)),
    ("quality_qlora8b_fp8_all", _quality("model.base_dtype=fp8_all", workload="qlora_8b", steps=160)),
]
UNSHARED = "model.fp8_shared_input=False"  # each FP8 projection quantizes its own input (session 8's code)
FP8_OUTPUT = "model.fp8_output=True"
NEXT_SPEED = [  # bf16; FP8 as session 8 ran it; each new option alone; both (the new defaults + fp8_output)
    ("lora_1b", _speed("lora_1b", SPEED_1B)),
    ("lora_1b_fp8_unshared", _speed("lora_1b_fp8", SPEED_1B, overrides=(UNSHARED,))),
    ("lora_1b_fp8_shared", _speed("lora_1b_fp8", SPEED_1B)),
    ("lora_1b_fp8_output_unshared", _speed("lora_1b_fp8", SPEED_1B, overrides=(UNSHARED, FP8_OUTPUT))),
    ("lora_1b_fp8_output_shared", _speed("lora_1b_fp8", SPEED_1B, overrides=(FP8_OUTPUT,))),
    ("lora_8b_fp8_output_shared", _speed("lora_8b_fp8", SPEED_8B, overrides=(FP8_OUTPUT,))),
]
NEXT_QUALITY = [*RECIPE_QUALITY[:3], ("quality_fp8_all_output", _quality("model.base_dtype=fp8_all", FP8_OUTPUT))]
PLANS: dict[str, dict[str, list[tuple[str, list[str]]]]] = {
    "dev": {
        "speed": [
            (
                "lora_1b_fp8_all_profiled",
                _speed("lora_1b_fp8", SPEED_1B, "--profile", "/tmp/fp8_trace", overrides=("model.base_dtype=fp8_all",)),
            ),
            ("lora_1b_fp8_fwd", _speed("lora_1b_fp8", SPEED_1B, overrides=("model.base_dtype=fp8_fwd",))),
        ],
        "quality": RECIPE_QUALITY,
    },
    "final": {  # what fitted in this session's device time (docs/benchmarks.md)
        "speed": [
            ("lora_1b_fp8_all", _speed("lora_1b_fp8", SPEED_1B, overrides=("model.base_dtype=fp8_all",))),
            ("lora_1b", _speed("lora_1b", SPEED_1B)),
            ("lora_1b_fp8_fwd", _speed("lora_1b_fp8", SPEED_1B, overrides=("model.base_dtype=fp8_fwd",))),
        ],
        "quality": RECIPE_QUALITY,
    },
    "side_by_side": {
        "speed": [
            ("lora_1b_vs_torchtune", _speed("lora_1b", SPEED_1B, "--compare-torchtune")),
            ("lora_1b_fp8", _speed("lora_1b_fp8", SPEED_1B)),
            ("lora_8b_fp8", _speed("lora_8b_fp8", SPEED_8B)),
            ("qlora_8b", _speed("qlora_8b", SPEED_8B)),
            ("lora_8b", _speed("lora_8b", SPEED_8B)),
        ],
        "quality": [],  # measured by `final` on the same code (docs/benchmarks.md)
    },
    "next": {"speed": NEXT_SPEED, "quality": NEXT_QUALITY},
    "qlora_fused": {  # the same with the fused NF4 -> e4m3 kernel, and a profile of the fp8_all step
        "speed": [
            ("qlora_8b", _speed("qlora_8b", SPEED_8B)),
            ("qlora_8b_fp8_all", _speed("qlora_8b", SPEED_8B, overrides=("model.base_dtype=fp8_all",))),
            ("qlora_8b_fp8_fwd", _speed("qlora_8b", SPEED_8B, overrides=("model.base_dtype=fp8_fwd",))),
            (
                "qlora_8b_fp8_all_profiled",
                _speed(
                    "qlora_8b", SPEED_8B, "--profile", "/tmp/qlora_fp8_trace", overrides=("model.base_dtype=fp8_all",)
                ),
            ),
        ],
        "quality": [],  # the fused kernel's weights are the two-step path's, bit for bit (tests)
    },
    "long": {  # QLoRA 8B at 1 x 16,384 (bf16, profiled fp8_all), and the FP8 LoRA goals of #27 again
        "speed": [
            ("qlora_8b_16k", _speed("qlora_8b", SPEED_16K)),
            (
                "qlora_8b_16k_fp8_all_profiled",
                _speed("qlora_8b", SPEED_16K, "--profile", "/tmp/qlora_16k", overrides=("model.base_dtype=fp8_all",)),
            ),
            ("lora_1b_fp8_output", _speed("lora_1b_fp8", SPEED_1B, overrides=(UNSHARED, FP8_OUTPUT))),
            ("lora_8b_fp8", _speed("lora_8b_fp8", SPEED_8B)),
        ],
        "quality": [],
    },
    "qlora8b_quality": {  # where the LoRA 1B FP8 step goes now; QLoRA 8B's FP8 quality against bf16's seed noise
        "speed": [
            (
                "lora_1b_fp8_output_profiled",
                _speed("lora_1b_fp8", SPEED_1B, "--profile", "/tmp/lora_1b_fp8", overrides=(UNSHARED, FP8_OUTPUT)),
            ),
        ],
        "quality": QLORA_8B_QUALITY,
    },
    "loss_kernel": {  # session 14: fp8_output's loss chunk as one Triton kernel, against session 9's curves
        "speed": [],  # measured A/B in separate calls (docs/benchmarks.md, "Session 14")
        "quality": [*RECIPE_QUALITY[:2], NEXT_QUALITY[-1]],
    },
    "seeds": {  # the same with seed 1 in both arms: same-seed pairs differ in FP8 alone; the mean over seeds
        "speed": [],
        "quality": [
            *RECIPE_QUALITY[:2],
            NEXT_QUALITY[-1],
            ("quality_fp8_all_output_seed1", _quality("seed=1", "model.base_dtype=fp8_all", FP8_OUTPUT)),
        ],
    },
    "qlora": {  # NF4 storage, FP8 GEMMs (a qlora_* builder with base_dtype): against QLoRA's bf16 GEMMs
        "speed": [
            ("qlora_8b", _speed("qlora_8b", SPEED_8B)),
            ("qlora_8b_fp8_all", _speed("qlora_8b", SPEED_8B, overrides=("model.base_dtype=fp8_all",))),
            ("qlora_8b_fp8_fwd", _speed("qlora_8b", SPEED_8B, overrides=("model.base_dtype=fp8_fwd",))),
        ],
        "quality": QLORA_QUALITY,
    },
}
QUALITY_RESERVE_S = 110  # what the quality runs of a plan need together (four at 2 x 2048: ~1.5 min)
MIN_JOB_S = 45  # a speed job with less than this left is skipped


def probe_block_scales() -> dict:
    """Whether ``torch._scaled_mm`` runs e4m3 GEMMs with 1 x 128 block scales on this GPU (finer
    output-gradient scales would need it), and how far each layout tried is from the emulation."""
    import torch

    from tuner.quantization.fp8 import FP8_DTYPE, FP8_MAX

    m, k, n, block = 256, 512, 384, 128
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(r, k, generator=g).cuda() for r in (m, n))

    def tiles(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # e4m3 with one scale per 1 x 128 tile
        tt = t.view(t.shape[0], k // block, block)
        scale = tt.abs().amax(-1).clamp(min=1e-12) / FP8_MAX
        return (tt / scale[..., None]).to(FP8_DTYPE).view_as(t), scale.float()

    (aq, sa), (bq, sb) = tiles(a), tiles(b)
    ref = (aq.float().view(m, -1, block) * sa[..., None]).view(m, k) @ (
        (bq.float().view(n, -1, block) * sb[..., None]).view(n, k)
    ).t()
    layouts = {
        "1x128 both, scales row-major": (sa, sb.t()),
        "1x128 both, scales outer-dim-major": (sa.t().contiguous().t(), sb.t().contiguous()),
    }
    out = {"torch": torch.__version__}
    for name, (scale_a, scale_b) in layouts.items():
        try:
            y = torch._scaled_mm(aq, bq.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
            out[name] = f"ran; relative error {float((y.float() - ref).norm() / ref.norm()):.2e}"
        except Exception as e:  # noqa: BLE001 - any refusal is the answer
            out[name] = f"refused: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return out


def _run_job(name: str, args: list[str], timeout: float, work: Path) -> subprocess.Popen:
    log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed by the caller's wait
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    proc.job = (name, cmd, time.time() + timeout, log)  # type: ignore[attr-defined]
    return proc


def _collect(proc: subprocess.Popen, results: dict, out: Path, work: Path) -> None:
    name, cmd, deadline, log = proc.job  # type: ignore[attr-defined]
    try:
        stdout, _ = proc.communicate(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, _ = proc.communicate()
        results[name] = {"error": "out of time", "command": cmd}
    log.close()
    if name not in results:
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        results[name] = json.loads(lines[-1]) if lines else {"error": f"exit {proc.returncode}", "command": cmd}
    results[name]["command"] = " ".join(["python3", "scripts/benchmark.py", *cmd[2:]])
    tail = (work / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
    with open(out / "log.txt", "a") as f:
        f.write(f"==== {name} (exit {proc.returncode})\n" + "\n".join(tail) + "\n")
    (out / "results.json").write_text(json.dumps(results))
    print(f"[gpu_fp8] {name}: {results[name].get('tokens_per_s_median', results[name].get('error'))}", flush=True)


def summary(results: dict) -> str:
    """The speed table and each quality run's curve gap against the bf16 run over the same base storage
    (``quality_bf16``; ``quality_qlora_bf16`` / ``quality_qlora8b_bf16`` for the NF4 runs)."""
    from benchmarks.parity import curve_gap

    lines = ["job | tokens/s | peak alloc / reserved GiB | mfu"]
    for name, r in results.items():
        if name.startswith("quality") or "tokens_per_s_median" not in r:
            continue
        lines.append(
            f"{name} | {r['tokens_per_s_median']} | {r['peak_alloc_gib']} / {r['peak_reserved_gib']} | {r['mfu']}"
        )
        for tt_name, tt in r.items():
            if tt_name.startswith("torchtune") and isinstance(tt, dict) and "tokens_per_s_median" in tt:
                lines.append(f"  {tt_name} | {tt['tokens_per_s_median']} | {tt.get('peak_alloc_gib')} |")
    arms: dict[str, dict[str, list[float]]] = {}  # run name without its seed -> {seed suffix: losses}
    for name, r in results.items():
        base = _bf16_run_of(name)
        reference = results.get(base, {}).get("losses")
        if name.startswith("quality") and name != base and reference and r.get("losses"):
            gap = curve_gap(reference, r["losses"])
            lines.append(f"{name} vs {base}: {json.dumps(gap)}")
        arm, seed = re.fullmatch(r"(.*?)(_seed\d+)?", name).groups()
        if name.startswith("quality") and r.get("losses"):
            arms.setdefault(arm, {})[seed or ""] = r["losses"]
            same_seed = results.get(base + (seed or ""), {}).get("losses")
            if seed and arm != base and same_seed:  # the same LoRA init in both runs: FP8 the only difference
                lines.append(f"{name} vs {base}{seed}: {json.dumps(curve_gap(same_seed, r['losses']))}")
    for arm, runs in arms.items():  # each arm's mean curve over its seeds against the bf16 arm's, seeds alike
        base_arm = _bf16_run_of(arm)
        base = arms.get(base_arm, {})
        if arm != base_arm and len(runs) > 1 and set(runs) <= set(base):
            mean, base_mean = (_mean_curve([group[k] for k in runs]) for group in (runs, base))
            lines.append(
                f"{arm} vs {base_arm}, mean over seeds {sorted(runs)}: {json.dumps(curve_gap(base_mean, mean))}"
            )
    return "\n".join(lines)


def _bf16_run_of(name: str) -> str:
    """The bf16 quality run over the same base storage and model as run ``name``."""
    prefix = next((p for p in ("quality_qlora8b_", "quality_qlora_", "quality_") if name.startswith(p)), "")
    return prefix + "bf16"


def _mean_curve(curves: list[list[float]]) -> list[float]:
    n = min(len(c) for c in curves)
    return [sum(c[i] for c in curves) / len(curves) for i in range(n)]


def main(argv: list[str]) -> int:
    plan_name, budget = argv[0], float(argv[1]) if len(argv) > 1 else 500.0
    plan = PLANS[plan_name]
    start = time.time()
    out = Path(os.environ.get("OUT", "/tmp/gpu_out"))
    work = Path("/tmp/gpu_fp8_work")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if plan_name == "dev":
        results["probe_block_scales"] = probe_block_scales()
        print(f"[gpu_fp8] block scales: {results['probe_block_scales']}", flush=True)
    for name, args in plan["speed"]:
        left = budget - (time.time() - start) - (QUALITY_RESERVE_S if plan["quality"] else 0)
        if left < MIN_JOB_S:
            results[name] = {"error": f"skipped: {left:.0f} s left before the quality runs"}
            continue
        extra = ["--torchtune-timeout", str(int(left))] if "--compare-torchtune" in args else []
        _collect(_run_job(name, args[:2] + extra + args[2:], left, work), results, out, work)
    left = budget - (time.time() - start)
    procs = [_run_job(name, args, left, work) for name, args in plan["quality"]]
    for proc in procs:
        _collect(proc, results, out, work)
    text = summary(results)
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
