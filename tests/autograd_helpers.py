"""Test helpers that watch what autograd does."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def saved_tensor_shapes() -> Iterator[list[tuple[int, ...]]]:
    """The shapes of the tensors autograd saves for backward inside the block, in order."""
    shapes: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        yield shapes
