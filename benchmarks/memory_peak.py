"""What is alive on the GPU at a run's peak, from the CUDA caching allocator's recorded history.

Input is `torch.cuda.memory._snapshot()` taken after `torch.cuda.memory._record_memory_history()`
was on for the whole run (``device_traces``: one event list per device, each ``alloc`` /
``free_completed`` with an address, a size and the Python frames that made it). Replaying the
events gives the allocated bytes after every event; at the highest point, the live blocks are
grouped by where they were made, so a peak can be taken apart ("1.0 GiB: checkpointed layer
inputs, 0.4 GiB: the layer's recomputed activations ...") instead of guessed at.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

FREES = ("free_completed",)
OWN_CODE = ("/tuner/", "/torchinductor_")  # frames worth naming: ours and inductor's generated code


def _site(frames: list[dict]) -> str:
    """'file:line function' of the innermost frame in our code or compiled code, else the innermost."""
    for f in frames:
        if any(part in f.get("filename", "") for part in OWN_CODE):
            break
    else:
        f = frames[0] if frames else {"filename": "?", "line": 0, "name": "?"}
    name = f.get("filename", "?").rsplit("/", 2)
    return f"{'/'.join(name[-2:])}:{f.get('line', 0)} {f.get('name', '?')}"


def peak_composition(snapshot: dict[str, Any], device: int = 0, top: int = 20) -> dict[str, Any]:
    """The allocated-bytes peak of the recorded history and the live blocks at it, by call site.

    Blocks allocated before recording began are not in the history: start recording before the
    model is built to see everything (``unrecorded`` is what the snapshot's segments hold beyond it).
    """
    traces = snapshot.get("device_traces", [])
    events = traces[device] if device < len(traces) else []
    live: dict[int, dict] = {}
    allocated = peak = 0
    peak_index = -1
    peak_blocks: dict[int, dict] = {}
    for i, e in enumerate(events):
        action = e.get("action")
        if action == "alloc":
            live[e["addr"]] = e
            allocated += e["size"]
            if allocated > peak:
                peak, peak_index = allocated, i
                peak_blocks = dict(live)
        elif action in FREES and e["addr"] in live:
            allocated -= live.pop(e["addr"])["size"]
    by_site: dict[str, list[int]] = defaultdict(list)
    for e in peak_blocks.values():
        by_site[_site(e.get("frames", []))].append(e["size"])
    rows = sorted(((sum(s), len(s), site) for site, s in by_site.items()), reverse=True)
    gib = 2**30
    segments = sum(
        b.get("size", 0)
        for seg in snapshot.get("segments", [])
        if seg.get("device", device) == device
        for b in seg.get("blocks", [])
        if b.get("state") == "active_allocated"
    )
    return {
        "peak_recorded_gib": round(peak / gib, 3),
        "peak_event": peak_index,
        "events": len(events),
        "at_peak_gib_by_site": [[round(b / gib, 3), n, site] for b, n, site in rows[:top]],
        "unrecorded_live_at_end_gib": round(max(0, segments - allocated) / gib, 3),
    }
