"""Offloaded activation checkpoints: a checkpointed layer's input waits for backward in (pinned) CPU
memory instead of on the GPU.

Why: torch's checkpoint wrapper recomputes a layer in backward from the layer's input, which it
keeps alive on the GPU (its recompute closure holds it; `torch.autograd.graph.save_on_cpu` does not
reach it). Under checkpointing that input is the only activation kept per layer, one
``[tokens, dim]`` hidden state, so it was the whole per-token growth of GPU memory: 32 layers x 4096
x 2 bytes = 0.25 MiB per token on Llama 3.1 8B (docs/benchmarks.md). Here each layer runs forward
without a graph, its input is copied to CPU on a side stream (overlapped with the next layers'
compute) and the GPU copy is dropped; in backward the input comes back (the next one down is
prefetched while this layer recomputes and back-propagates), the layer is recomputed with a graph
and back-propagated at once, as unsloth's offloaded gradient checkpointing does. GPU memory then
holds the activations of about one layer at a time, whatever the depth.

Gradients are those of the plain checkpointed run: the same forward is recomputed with the same RNG
and autocast state from a bit-identical copy of the input. Parameter gradients accumulate into
``.grad`` from the nested backward (the reentrant style), which FSDP2's per-layer hooks do not
follow: the trainer refuses that combination.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import ActivationWrapper

from tuner.models.recompute import autocast_state, restored_autocast, restored_rng, rng_state

#: Host copies are made in pieces of this many bytes: the pinned-memory allocator rounds every
#: block up to a power of two, so one whole-layer block of 2.1 GiB would take 4 GiB of host memory.
PIECE_BYTES = 64 * 1024**2


class _HostCopy:
    """One layer input in host memory (pieces of `PIECE_BYTES`), and its way back to the device."""

    def __init__(self, x: torch.Tensor, streams: "OffloadStreams") -> None:
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.prev: weakref.ref[_HostCopy] | None = None  # the copy of the layer before (prefetched next)
        self._on_device: torch.Tensor | None = None
        self._ready: torch.cuda.Event | None = None
        flat = x.detach().reshape(-1)
        step = max(1, PIECE_BYTES // x.element_size())
        pin = x.is_cuda
        with streams.side(x.device) as side:
            self.pieces = []
            for a in range(0, flat.numel(), step):
                piece = torch.empty(min(step, flat.numel() - a), dtype=x.dtype, pin_memory=pin)
                piece.copy_(flat[a : a + step], non_blocking=pin)
                self.pieces.append(piece)
        if side is not None:
            x.record_stream(side)  # its memory is not reused before the copy has read it

    def fetch(self, streams: "OffloadStreams") -> None:
        """Start copying back to the device (no-op if started or already consumed)."""
        if self._on_device is not None or not self.pieces:
            return
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)  # on the compute stream
        flat = out.view(-1)
        with streams.side(self.device) as side:
            a = 0
            for piece in self.pieces:
                flat[a : a + piece.numel()].copy_(piece, non_blocking=side is not None)
                a += piece.numel()
            if side is not None:
                self._ready = torch.cuda.Event()
                self._ready.record(side)
                out.record_stream(side)  # freed unused (a run stopped in backward): not reused mid-copy
        self._on_device = out

    def take(self, streams: "OffloadStreams") -> torch.Tensor:
        """The input on its device, ready for the compute stream; frees the host copy."""
        self.fetch(streams)
        if self._ready is not None:
            torch.cuda.current_stream(self.device).wait_event(self._ready)
        out, self._on_device, self.pieces = self._on_device, None, []
        assert out is not None
        return out


class OffloadStreams:
    """The side CUDA stream per device that host copies run on, and the last layer input copied
    (which the next copy links to, so backward can prefetch one layer ahead)."""

    def __init__(self) -> None:
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self.last: weakref.ref[_HostCopy] | None = None

    @contextlib.contextmanager
    def side(self, device: torch.device):
        """Run the block's copies on ``device``'s side stream, after the work queued so far on the
        compute stream (yields that stream, or None off CUDA)."""
        if device.type != "cuda":
            yield None
            return
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            yield stream


class _OffloadedCheckpoint(torch.autograd.Function):
    """``run(x)`` without a graph in forward, ``x`` kept on the host; recomputed in backward."""

    @staticmethod
    def forward(ctx, run: Callable[[torch.Tensor], torch.Tensor], streams: OffloadStreams, x, anchor):  # noqa: ARG004
        ctx.run, ctx.streams = run, streams
        ctx.x_requires_grad = x.requires_grad
        ctx.autocast = autocast_state(x.device)
        ctx.rng = rng_state(x.device)
        copy = _HostCopy(x, streams)
        copy.prev, streams.last = streams.last, weakref.ref(copy)
        ctx.copy = copy
        with torch.no_grad():
            return run(x)

    @staticmethod
    def backward(ctx, grad_out):
        copy: _HostCopy = ctx.copy
        x = copy.take(ctx.streams)
        below = copy.prev() if copy.prev is not None else None
        if below is not None:
            below.fetch(ctx.streams)  # overlaps with this layer's recompute and backward
        x = x.detach().requires_grad_(ctx.x_requires_grad)
        with torch.enable_grad(), restored_rng(x.device, ctx.rng), restored_autocast(x.device, ctx.autocast):
            out = ctx.run(x)
        if out.requires_grad:
            torch.autograd.backward(out, grad_out)
        return None, None, x.grad if ctx.x_requires_grad else None, None


class OffloadedCheckpointWrapper(ActivationWrapper):
    """A decoder layer whose input is offloaded and whose activations are recomputed (module
    docstring). It is a torch checkpoint wrapper in all but its forward (the layer at
    ``_checkpoint_wrapped_module``, parameter and state-dict names without that part, attributes
    read through), so state dicts, compile and key cleaning treat both wrappers alike."""

    def __init__(self, layer: nn.Module, streams: OffloadStreams) -> None:
        super().__init__(layer)
        self._streams = streams
        # Makes the output need a gradient even when the input does not (a frozen embedding's
        # output), so that backward reaches this layer's trainable parameters.
        self._anchor = torch.empty(0, requires_grad=True)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        layer = self._checkpoint_wrapped_module
        if not torch.is_grad_enabled():
            return layer(x, **kwargs)

        def run(inp: torch.Tensor) -> torch.Tensor:
            return layer(inp, **kwargs)

        return _OffloadedCheckpoint.apply(run, self._streams, x, self._anchor)
