"""The longest sequence that trains under a GPU memory cap (``scripts/benchmark.py --max-context``).

For each cap, a bisection over sequence lengths (multiples of ``multiple`` tokens) runs one probe
per length: a few training steps of the workload in a fresh subprocess (``scripts/benchmark.py
--memory-cap-gib``, which caps the process with ``torch.cuda.set_per_process_memory_fraction``), so
that an out-of-memory error ends that process only and the next probe starts clean. A probe that
runs out of memory says "does not fit"; one that trains says "fits" with its tokens/s, peak GPU
memory and the host memory the process used at its peak (offloaded activations live there).
Bisection assumes that what fits at a length fits at every shorter one.

unsloth's published figures (Llama 3.1 8B, QLoRA rank 32 on every linear layer, batch 1; their
blog post of the long-context release, tokens per GPU memory size) are the reference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# GiB of GPU memory -> the longest context unsloth reports for its 8B QLoRA setup
UNSLOTH_8B_TOKENS = {8: 2_972, 12: 21_848, 16: 40_724, 24: 78_475, 40: 153_977, 48: 191_728, 80: 342_733}
GOAL_FACTOR = 1.5  # issue #26: >= 1.5x unsloth's figure at 16/24/48 GB
GOAL_80GB = 343_000  # and >= 343k at 80 GB

_OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "out of memory")


@dataclass
class Probe:
    """One training run at ``seq_len``: ``fits`` True (trained), False (out of memory) or None (it
    failed otherwise or ran past its time: the search stops there)."""

    seq_len: int
    fits: bool | None
    tokens_per_s: float | None = None
    peak_alloc_gib: float | None = None
    peak_reserved_gib: float | None = None
    host_peak_rss_gib: float | None = None
    wall_s: float | None = None
    error: str | None = None


@dataclass
class Search:
    """What a bisection found: ``longest`` fitting length probed (None: none fitted), the shortest
    that did not (None: none failed), and whether the two are ``multiple`` apart (``complete``)."""

    longest: int | None
    first_failing: int | None
    complete: bool
    probes: list[Probe] = field(default_factory=list)
    stopped: str | None = None  # why the search ended before it was complete

    def best(self) -> Probe | None:
        return next((p for p in self.probes if p.seq_len == self.longest and p.fits), None)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": asdict(self.best()) if self.best() else None}


def longest_fitting(
    probe: Callable[[int], Probe],
    lo: int,
    hi: int,
    multiple: int,
    first: int | None = None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> Search:
    """Bisect the multiples of ``multiple`` in [lo, hi] for the longest length ``probe`` says fits.

    ``first``: the length probed first (e.g. a goal, so that one probe says whether it is met),
    rounded up to a multiple; then each probe halves the interval between the longest length known
    to fit and the shortest known not to. Stops early when ``out_of_time()`` or when a probe gives
    ``fits=None``; ``complete`` then stays False and the two bounds say what is known."""
    if multiple < 1 or lo < multiple or hi < lo:
        raise ValueError(f"need 1 <= multiple <= lo <= hi; got multiple={multiple}, lo={lo}, hi={hi}")
    good, bad = lo // multiple - 1, hi // multiple + 1  # in units of `multiple`; neither probed yet
    low_k = good + 1
    probes: list[Probe] = []
    k = min(max(-(-first // multiple), low_k), bad - 1) if first is not None else (good + bad) // 2
    stopped = None
    while bad - good > 1:
        if out_of_time():
            stopped = "out of time"
            break
        result = probe(k * multiple)
        probes.append(result)
        if result.fits is None:
            stopped = f"probe at {k * multiple} failed: {result.error}"
            break
        if result.fits:
            good = k
        else:
            bad = k
        k = (good + bad) // 2
    return Search(
        longest=good * multiple if good >= low_k else None,
        first_failing=bad * multiple if bad <= hi // multiple else None,
        complete=bad - good <= 1,
        probes=probes,
        stopped=stopped,
    )


def goal_tokens(cap_gib: float) -> int | None:
    """The issue's goal at this cap: 1.5x unsloth's figure, or 343k at 80 GB; None where unsloth
    published nothing."""
    if cap_gib == 80:
        return GOAL_80GB
    figure = UNSLOTH_8B_TOKENS.get(int(cap_gib)) if float(cap_gib).is_integer() else None
    return int(GOAL_FACTOR * figure) if figure else None


def host_peak_rss_gib() -> float | None:
    """This process's peak resident host memory (VmHWM, GiB), pinned buffers included; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 2)
    except OSError:
        return None
    return None


def probe_command(
    workload: str, seq_len: int, cap_gib: float, steps: int, overrides: Sequence[str], device: str = "cuda"
) -> list[str]:
    """argv of one probe: the workload at ``seq_len`` (batch 1; the model built with
    ``max_seq_len=seq_len``, its RoPE tables for exactly that many positions, unless ``overrides``
    set it) for ``steps`` steps under a ``cap_gib`` memory cap (0: no cap); tokens/s is the last step's (with
    one step, the first's, which includes one-time costs: small next to a step at long context)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"
    return [
        sys.executable,
        str(script),
        "--workload",
        workload,
        "--seq-len",
        str(seq_len),
        "--batch-size",
        "1",
        "--steps",
        str(steps),
        "--warmup",
        str(steps - 1),
        "--device",
        device,
        "--memory-cap-gib",
        str(cap_gib),
        f"model.max_seq_len={seq_len}",
        *overrides,
    ]


def read_probe(seq_len: int, returncode: int, output: str, wall_s: float) -> Probe:
    """A probe's outcome from its exit code and output (the benchmark's JSON line on success)."""
    if returncode == 0:
        for line in reversed(output.strip().splitlines()):
            if line.startswith("{"):
                r = json.loads(line)
                return Probe(
                    seq_len,
                    True,
                    tokens_per_s=r.get("tokens_per_s_median"),
                    peak_alloc_gib=r.get("peak_alloc_gib"),
                    peak_reserved_gib=r.get("peak_reserved_gib"),
                    host_peak_rss_gib=r.get("host_peak_rss_gib"),
                    wall_s=wall_s,
                )
        return Probe(seq_len, None, wall_s=wall_s, error="no result line in the probe's output")
    if any(marker in output for marker in _OOM_MARKERS):
        return Probe(seq_len, False, wall_s=wall_s, error="out of memory")
    tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
    return Probe(seq_len, None, wall_s=wall_s, error=f"exit code {returncode}: " + " | ".join(tail))


def run_probe(argv: list[str], seq_len: int, timeout: float) -> Probe:
    """Run one probe's command (a fresh process) and read its outcome; past ``timeout`` seconds it
    is killed and counts as unknown."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the probe and anything it started: its GPU memory is freed
        proc.communicate()
        return Probe(seq_len, None, wall_s=round(time.perf_counter() - start, 1), error=f"past {timeout:.0f} s")
    return read_probe(seq_len, proc.returncode, output, round(time.perf_counter() - start, 1))


def check_search(caps_gib: Sequence[float], lo: int, hi: int, multiple: int, steps: int, device: str) -> None:
    """Refuse, in one UsageError, a search that cannot run: caps on CPU, no steps, an empty range."""
    from tuner.errors import UsageError

    if device != "cuda" and any(caps_gib):
        raise UsageError(
            "--max-context caps GPU memory; on CPU nothing would be capped",
            "run on CUDA, or pass --max-context 0 (no cap) to try the probes on CPU",
        )
    if steps < 1:
        raise UsageError(f"--max-context needs --steps >= 1, got {steps}")
    if not 1 <= multiple <= lo <= hi:
        raise UsageError(
            f"--context-range {lo}:{hi} with --context-multiple {multiple} is empty",
            "use --context-multiple <= LO <= HI, e.g. --context-range 4096:524288 --context-multiple 4096",
        )


def search_caps(
    caps_gib: Sequence[float],
    lo: int,
    hi: int,
    multiple: int,
    command: Callable[[int, float], list[str]],
    probe_timeout: float = 600,
    time_budget: float | None = None,
) -> dict[str, dict[str, Any]]:
    """For each cap (GiB; 0: none), the longest length that trains: a bisection (`longest_fitting`)
    whose probes run ``command(seq_len, cap)`` in a fresh process, the issue's goal probed first.
    The command is any runner printing the probe JSON line `read_probe` reads (tuner's
    `probe_command`, or another tool's). Each probe is printed on stderr as it ends; past
    ``time_budget`` seconds no probe starts. Returns cap -> the search, unsloth's figure, the goal
    and whether it was met."""
    deadline = time.monotonic() + time_budget if time_budget else None

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() > deadline

    results = {}
    for cap in caps_gib:

        def probe(seq_len: int, cap: float = cap) -> Probe:
            result = run_probe(command(seq_len, cap), seq_len, probe_timeout)
            print(f"probe: cap {cap:g} GiB " + json.dumps(vars(result)), file=sys.stderr, flush=True)
            return result

        goal = goal_tokens(cap)
        search = longest_fitting(probe, lo, hi, multiple, first=goal, out_of_time=out_of_time)
        entry = search.as_dict()
        entry.update(unsloth_tokens=UNSLOTH_8B_TOKENS.get(int(cap)), goal_tokens=goal)
        entry["goal_met"] = goal_met(search, goal)
        results[f"{cap:g}"] = entry
    return results


def cap_gpu_memory(cap_gib: float | None, device: str) -> None:
    """Let this process allocate at most ``cap_gib`` GiB of GPU memory (0 or None: no cap), as a GPU
    of that size would: ``torch.cuda.set_per_process_memory_fraction``."""
    import torch

    from tuner.errors import UsageError

    if not cap_gib:
        return
    if device != "cuda":
        raise UsageError(
            f"--memory-cap-gib {cap_gib:g} caps GPU memory; on {device} there is none to cap",
            "run on CUDA, or pass 0 (no cap) to try the probe on CPU",
        )
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    if cap_gib * 2**30 > total:
        raise UsageError(
            f"--memory-cap-gib {cap_gib:g} is more than this GPU's {total / 2**30:.1f} GiB",
            "pass a smaller cap, or 0 for the whole GPU",
        )
    torch.cuda.set_per_process_memory_fraction(cap_gib * 2**30 / total)


def goal_met(search: Search, goal: int | None) -> bool | None:
    """True when a length >= ``goal`` trained, False when one <= ``goal`` ran out of memory, None
    when the probes did not decide it (or there is no goal)."""
    if goal is None:
        return None
    if search.longest is not None and search.longest >= goal:
        return True
    if search.first_failing is not None and search.first_failing <= goal:
        return False
    return None
