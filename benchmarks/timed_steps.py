"""The plain training loop the other tools' runs share (the HF baseline of ``scripts/benchmark.py
--compare-hf``, unsloth's probes in ``scripts/gpu_unsloth.py``): forward with labels = inputs,
backward, optimizer step, each step timed to its end (CUDA synchronized) and its loss kept."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch


def timed_steps(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[torch.Tensor]
) -> tuple[list[float], list[float]]:
    """Train one step per batch of token ids; returns (seconds per step, loss per step)."""
    times, losses = [], []
    for ids in batches:
        if ids.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # waits for the step's GPU work
        times.append(time.perf_counter() - start)
    return times, losses
