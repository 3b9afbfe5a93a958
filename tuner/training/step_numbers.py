"""A finished optimizer step's numbers (loss, grad norm), read from the GPU one step later.

Reading a GPU scalar with ``.item()`` waits for everything queued before it; at the end of a step
that is the whole backward, and the GPU then idles while the CPU logs, fetches the next batch and
launches the next forward (the measured cost is in docs/benchmarks.md). Instead the
scalars are copied to pinned host memory behind an event when the step ends, and read once the
next step has been launched, by which time they are long ready.
"""

from __future__ import annotations

from typing import Any

import torch


class StepNumbers:
    """Scalars of step ``step``: tensors (copied to the host without waiting) and plain values."""

    def __init__(self, step: int, values: dict[str, Any]) -> None:
        self.step = step
        self._plain = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
        tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
        self._keys = list(tensors)
        self._event: torch.cuda.Event | None = None
        self._host: torch.Tensor | None = None
        if tensors:
            stacked = torch.stack([t.detach().reshape(()).to(torch.float64) for t in tensors.values()])
            if stacked.is_cuda:
                self._host = stacked.to("cpu", non_blocking=True)  # into pinned memory, asynchronously
                self._event = torch.cuda.Event()
                self._event.record()
            else:
                self._host = stacked.cpu()

    def read(self) -> dict[str, Any]:
        """All values as Python numbers (waits only for the work that produced them)."""
        if self._event is not None:
            self._event.synchronize()
        out = dict(self._plain)
        if self._host is not None:
            out.update(zip(self._keys, self._host.tolist()))
        return out
