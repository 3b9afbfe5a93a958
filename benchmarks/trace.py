"""What a profiler trace says about a training step: GPU time per kernel, and where the GPU waits.

Input is the Chrome trace that `torch.profiler` writes (``traceEvents``). GPU idle time is the
gaps between the union of kernel, memcpy and memset intervals inside the traced steps. Each gap is
blamed on the CPU op that launched the kernel after it (late launch: the CPU was busy elsewhere or
the op itself is slow to launch) and, when a stream/device synchronization ran on the CPU during
the gap, on that synchronization.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
RUNTIME_CATEGORIES = ("cuda_runtime", "cuda_driver")  # Triton kernels are launched through the driver API
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def _steps(events: list[dict]) -> list[dict]:
    return [
        e for e in events if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith("ProfilerStep#")
    ]


def kernel_summary(events: list[dict], top: int = 25) -> dict[str, Any]:
    """GPU time per kernel name over the traced steps, optimizer time and launches."""
    kernels = [e for e in events if e.get("cat") in GPU_CATEGORIES]
    cpu = [e for e in events if e.get("cat") == "user_annotation"]  # GPU copies are "gpu_user_annotation"
    steps = _steps(events)
    optimizer = [e for e in cpu if str(e.get("name", "")).startswith("Optimizer.step")]
    by_name: dict[str, list[float]] = defaultdict(list)
    for e in kernels:
        by_name[e["name"][:90]].append(e.get("dur", 0) / 1e3)
    rows = sorted(((sum(d), len(d), n) for n, d in by_name.items()), reverse=True)
    return {
        "steps_traced": len(steps),
        "wall_ms": round(sum(e.get("dur", 0) for e in steps) / 1e3, 1),
        "gpu_busy_ms": round(sum(sum(d) for d in by_name.values()), 1),
        "kernel_launches": len(kernels),
        "optimizer_step_ms": round(sum(e.get("dur", 0) for e in optimizer) / 1e3, 1),
        "top_kernels_ms": [[round(ms, 2), n, name] for ms, n, name in rows[:top]],
    }


def _innermost(intervals: list[dict], starts: list[float], ts: float) -> dict | None:
    """The shortest interval in ``intervals`` (sorted by start) that contains ``ts``."""
    best = None
    i = bisect.bisect_right(starts, ts)
    for e in reversed(intervals[max(0, i - 400) : i]):  # ops nest; a few hundred back is plenty
        if e["ts"] <= ts <= e["ts"] + e.get("dur", 0) and (best is None or e.get("dur", 0) < best.get("dur", 0)):
            best = e
    return best


def _launch_index(events: list[dict]) -> tuple[dict, list[dict], list[float]]:
    """(runtime launch event by correlation id, CPU ops sorted by start, their starts)."""
    launches = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("cat") in RUNTIME_CATEGORIES and "correlation" in e.get("args", {})
    }
    ops = sorted((e for e in events if e.get("cat") == "cpu_op" and e.get("ph") == "X"), key=lambda e: e["ts"])
    return launches, ops, [e["ts"] for e in ops]


def kernel_launchers(events: list[dict], top: int = 15) -> list[list]:
    """GPU time per (kernel, the CPU op that launched it, that op's input shapes when recorded), largest
    first: which call a costly kernel belongs to when its name does not say (a copy, a fill, a GEMM)."""
    launches, ops, op_starts = _launch_index(events)
    rows: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") not in GPU_CATEGORIES:
            continue
        launch = launches.get(e.get("args", {}).get("correlation"))
        op = _innermost(ops, op_starts, launch["ts"]) if launch else None
        shapes = str(op.get("args", {}).get("Input Dims", ""))[:100] if op else ""
        rows[(e["name"][:60], op["name"][:60] if op else "?", shapes)].append(e.get("dur", 0) / 1e3)
    ranked = sorted(((sum(d), len(d), *key) for key, d in rows.items()), reverse=True)
    return [[round(ms, 2), n, kernel, op, shapes] for ms, n, kernel, op, shapes in ranked[:top]]


def idle_gaps(events: list[dict], min_gap_us: float = 20.0, top: int = 15) -> dict[str, Any]:
    """GPU idle time inside the traced steps, blamed on what the CPU did (see the module docstring)."""
    steps = _steps(events)
    if not steps:
        return {"error": "no ProfilerStep in the trace"}
    lo = min(e["ts"] for e in steps)
    hi = max(e["ts"] + e.get("dur", 0) for e in steps)
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATEGORIES and lo <= e["ts"] <= hi), key=lambda e: e["ts"])
    if not gpu:
        return {"error": "no GPU activity in the traced steps"}
    launches, ops, op_starts = _launch_index(events)
    syncs = sorted(
        (e for e in events if e.get("cat") in RUNTIME_CATEGORIES and e.get("name") in SYNC_CALLS), key=lambda e: e["ts"]
    )
    sync_starts = [e["ts"] for e in syncs]

    gaps: list[tuple[float, float, dict]] = []  # (start, length, kernel after the gap)
    busy_end = gpu[0]["ts"]
    idle_lead = gpu[0]["ts"] - lo
    for e in gpu:
        if e["ts"] - busy_end >= min_gap_us:
            gaps.append((busy_end, e["ts"] - busy_end, e))
        busy_end = max(busy_end, e["ts"] + e.get("dur", 0))
    by_op: dict[str, float] = defaultdict(float)
    largest = []
    for start, length, after in gaps:
        launch = launches.get(after.get("args", {}).get("correlation"))
        op = _innermost(ops, op_starts, launch["ts"]) if launch else None
        j = bisect.bisect_left(sync_starts, start)
        synced = j < len(syncs) and syncs[j]["ts"] <= start + length
        blame = ("sync " if synced else "") + (op["name"] if op else (launch["name"] if launch else "?"))
        by_op[blame] += length
        largest.append((length, blame, after["name"][:60], start - lo))
    total = sum(length for _, length, _ in gaps)
    largest.sort(reverse=True)
    return {
        "window_ms": round((hi - lo) / 1e3, 2),
        "idle_ms": round((total + idle_lead + max(0.0, hi - busy_end)) / 1e3, 2),
        "idle_in_gaps_ms": round(total / 1e3, 2),
        "gaps": len(gaps),
        "idle_by_launching_op_ms": sorted(([round(v / 1e3, 2), k] for k, v in by_op.items()), reverse=True)[:top],
        "largest_gaps": [
            [round(length / 1e3, 3), blame, kernel, round(at / 1e3, 2)] for length, blame, kernel, at in largest[:top]
        ],
    }
