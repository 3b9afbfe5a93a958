"""Next-token cross-entropy that never materialises [batch, seq, vocab] float32 logits.

The loss takes the decoder's final hidden states and its output projection and scores the
sequence chunk by chunk. Each chunk's cross-entropy keeps only its logits in the training dtype
for backward (the softmax is recomputed from them, in float32, one chunk at a time), so bf16
training stores bf16 logits and no float32 copy. ``checkpoint_chunks=True`` goes further and keeps
no logits at all, recomputing each chunk's projection in backward (less memory, one more matmul).

When the projection is frozen (LoRA, QLoRA: the caller passes its weight as ``frozen_weight``), the
loss is the last op of the step, so each chunk's gradient w.r.t. the hidden states is computed in
the forward, right after its loss, and the chunk's logits are dropped: backward only scales the
saved [b, s, d] gradient. Same matmuls as the plain path, none recomputed, and no logits kept (on
the 8B QLoRA shape the bf16 logits were the run's peak; docs/benchmarks.md).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.checkpoint import checkpoint

from tuner.config import instantiate, resolve_component
from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.errors import ConfigError
from tuner.quantization import FP8Weight, fp8_triton
from tuner.quantization.fp8 import FP8Input, fp8_matmul, fp8_matmul_grad, input_grad_operand, quantize_output_grad
from tuner.training import loss_triton


def shift_labels(labels: torch.Tensor, ignore_index: int = CROSS_ENTROPY_IGNORE_IDX) -> torch.Tensor:
    """Labels aligned with tokens -> the label each position must predict (the next token)."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), ignore_index)], dim=1)


def _ce_forward(logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's loss (0 where not ``valid``; the caller sums) and its log-sum-exp."""
    as_float = logits.float()
    lse = torch.logsumexp(as_float, dim=-1)
    picked = as_float.gather(1, safe[:, None]).squeeze(1)
    return (lse - picked) * valid, lse


def _ce_backward(
    logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    g = torch.exp(logits.float() - lse[:, None])  # softmax
    g = g - torch.nn.functional.one_hot(safe, logits.shape[-1]).to(g.dtype)
    return (g * (valid.to(g.dtype) * grad)[:, None]).to(logits.dtype)


def _ce_forward_backward(
    logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(each row's loss, the gradient of their sum w.r.t. the logits in their dtype): both passes for one chunk."""
    loss, lse = _ce_forward(logits, safe, valid)
    return loss, _ce_backward(logits, safe, valid, lse, logits.new_ones((), dtype=torch.float32))


def _ce_forward_backward_fp8(
    logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, weight_scale: torch.Tensor
) -> tuple[torch.Tensor, FP8Input]:
    """`_ce_forward_backward` with the logits' gradient quantized for the FP8 input-gradient GEMM in the
    same kernel (``fp8_output``): no [rows, vocab] float32 copy of it is written."""
    loss, grad = _ce_forward_backward(logits, safe, valid)
    return loss, quantize_output_grad(grad, weight_scale)


_COMPILED: dict[str, Callable] = {}


def _kernel(name: str, fn: Callable, on_cuda: bool) -> Callable:
    """On CUDA, one fused compiled kernel per pass (read bf16 logits once, write once)."""
    if not on_cuda:
        return fn
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


class _CrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy of ``logits`` [N, V] against ``targets`` [N], computed in float32,
    saving the logits in their own dtype (not a float32 softmax) for backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        valid = targets != ignore_index
        safe = targets.masked_fill(~valid, 0)
        row_losses, lse = _kernel("forward", _ce_forward, logits.is_cuda)(logits, safe, valid)
        ctx.save_for_backward(logits, safe, valid, lse)
        return row_losses.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, safe, valid, lse = ctx.saved_tensors
        return _kernel("backward", _ce_backward, logits.is_cuda)(logits, safe, valid, lse, grad), None, None


def _scored_rows(targets: torch.Tensor, ignore_index: int) -> torch.Tensor | None:
    """Indices of the rows of ``targets`` that are scored (not ``ignore_index``); None when all are.

    An ignored row adds exactly 0 to the loss and to the gradient, so the frozen-projection loss
    computes logits only for the scored rows: an SFT batch trains on its answers, and its prompt
    and padding rows (3 in 4 on the quickstart) would each cost a vocabulary-wide matmul row and
    softmax. Each kept row's numbers are the same operations on the same row, and the chunk's
    losses are summed in their original places with zeros between, so the loss is the same; only
    on CPU, where learning the count (a host read) stalls nothing, unlike a CUDA queue. Evaluation
    (no gradient) does the same with any projection.
    """
    valid = targets != ignore_index
    keep = valid.nonzero().squeeze(1)
    return None if keep.numel() == targets.numel() else keep


class _FrozenLinearCrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight^T`` [N, V] against ``targets`` [N] for a frozen
    ``weight``, in chunks of rows; the gradient w.r.t. ``hidden`` is made in forward (see the module
    docstring), so only it is saved. ``weight`` may be an `FP8Weight` (LoRA's ``fp8_output``): each
    chunk's logits and hidden-state gradient are then `fp8_matmul` / `fp8_matmul_grad`, the GEMMs of an
    FP8 block linear (the transposed FP8 copy, or the dequantized one, made once for all chunks)."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int, rows_per_chunk: int
    ) -> torch.Tensor:
        total = hidden.new_zeros((), dtype=torch.float32)
        scored_only = not hidden.is_cuda  # see `_scored_rows`
        grad_hidden = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.zeros_like(hidden) if scored_only else torch.empty_like(hidden)
        fp8 = isinstance(weight, FP8Weight)  # LoRA's fp8_output: both GEMMs as an FP8 block linear's
        grad_operand = input_grad_operand(weight, hidden.dtype) if fp8 and grad_hidden is not None else None
        fused_fp8_grad = grad_operand is not None and weight.fp8_input_grad  # an operand: fp8, with a gradient
        log_scale = torch.log(weight.scale) if fused_fp8_grad and fp8_triton.available(hidden.device) else None
        for start in range(0, hidden.shape[0], rows_per_chunk):
            chunk = slice(start, start + rows_per_chunk)
            keep = _scored_rows(targets[chunk], ignore_index) if scored_only else None
            if keep is not None and keep.numel() == 0:
                continue  # nothing scored: the chunk adds 0 to the loss and to the gradient
            h, chunk_targets = hidden[chunk], targets[chunk]
            if keep is not None:
                h, chunk_targets = h.index_select(0, keep), chunk_targets.index_select(0, keep)
            logits = fp8_matmul(h, weight) if fp8 else h @ weight.t()
            valid = chunk_targets != ignore_index
            safe = chunk_targets.masked_fill(~valid, 0)
            grad_h = None
            if grad_hidden is None:
                losses, _ = _kernel("forward", _ce_forward, logits.is_cuda)(logits, safe, valid)
            elif fused_fp8_grad:
                if log_scale is not None:  # one Triton kernel, two reads of the logits (`loss_triton`)
                    losses, g_fp8 = loss_triton.ce_grad_fp8(
                        logits, chunk_targets, ignore_index, weight.scale, log_scale
                    )
                else:
                    kernel = _kernel("forward_backward_fp8", _ce_forward_backward_fp8, logits.is_cuda)
                    losses, g_fp8 = kernel(logits, safe, valid, weight.scale)
                grad_h = fp8_matmul_grad(logits, weight, grad_operand, g_fp8)  # logits: the dtype
            else:
                losses, grad_logits = _kernel("forward_backward", _ce_forward_backward, logits.is_cuda)(
                    logits, safe, valid
                )
                if fp8:
                    grad_h = fp8_matmul_grad(grad_logits, weight, grad_operand)
                elif keep is None:
                    torch.mm(grad_logits, weight, out=grad_hidden[chunk])
                else:
                    grad_h = grad_logits @ weight
            if grad_h is not None:
                if keep is None:
                    grad_hidden[chunk] = grad_h
                else:
                    grad_hidden[chunk].index_copy_(0, keep, grad_h)
            if keep is not None:  # the chunk's rows back in place, zeros between: the same sum as every row's
                losses = losses.new_zeros(targets[chunk].shape[0]).index_copy_(0, keep, losses)
            total = total + losses.sum()
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad.to(grad_hidden.dtype), None, None, None, None


# The model's output projection, hidden states -> logits (`TransformerDecoder.project`): the third
# argument of every loss the trainer calls as ``loss(hidden, labels, project, frozen_weight)``.
Projection = Callable[[torch.Tensor], torch.Tensor]


def cross_entropy_sum(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = CROSS_ENTROPY_IGNORE_IDX
) -> torch.Tensor:
    """Summed next-token loss of ``logits`` [..., V] against ``targets`` [...] (no mean)."""
    return _CrossEntropySum.apply(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index)


def _chunk_ce_sum(project: Projection, hidden: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    keep = None
    if not torch.is_grad_enabled() and not hidden.is_cuda:  # evaluation: only the scored rows (`_scored_rows`)
        keep = _scored_rows(targets.reshape(-1), ignore_index)
    if keep is None:
        return cross_entropy_sum(project(hidden), targets, ignore_index)
    losses = hidden.new_zeros(targets.numel(), dtype=torch.float32)
    if keep.numel():
        scored = targets.reshape(-1).index_select(0, keep)
        logits = project(hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep))
        losses.index_copy_(0, keep, _ce_forward(logits, scored, torch.ones_like(scored, dtype=torch.bool))[0])
    return losses.sum()


class ChunkedCrossEntropyLoss(nn.Module):
    """Mean next-token cross-entropy over non-ignored tokens, computed in ``num_output_chunks``.

    Call as ``loss(hidden, labels, project)`` with ``hidden`` [b, s, d] from ``model.hidden(...)``,
    ``labels`` aligned with the input tokens (shifted here) and ``project`` the model's output
    projection. ``reduction="sum"`` returns the summed loss so gradient accumulation can divide by
    the token count of the whole accumulation window.
    """

    def __init__(
        self,
        num_output_chunks: int = 8,
        ignore_index: int = CROSS_ENTROPY_IGNORE_IDX,
        reduction: str = "mean",
        checkpoint_chunks: bool = False,
    ) -> None:
        super().__init__()
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.checkpoint_chunks = checkpoint_chunks

    def forward(
        self,
        hidden: torch.Tensor,
        labels: torch.Tensor,
        project: Projection,
        frozen_weight: torch.Tensor | FP8Weight | None = None,
    ) -> torch.Tensor:
        """``frozen_weight``: the weight W of ``project`` when it is exactly ``h @ W^T`` and W is
        frozen (`TransformerDecoder.frozen_output_weight`), dense or its FP8 copy; the loss then keeps
        no logits."""
        targets = shift_labels(labels, self.ignore_index)
        total = hidden.new_zeros((), dtype=torch.float32)
        if frozen_weight is not None:
            flat = hidden.reshape(-1, hidden.shape[-1])
            rows = -(-flat.shape[0] // self.num_output_chunks)
            total = _FrozenLinearCrossEntropySum.apply(
                flat, frozen_weight, targets.reshape(-1), self.ignore_index, rows
            )
        else:
            for h, t in zip(hidden.chunk(self.num_output_chunks, dim=1), targets.chunk(self.num_output_chunks, dim=1)):
                if self.checkpoint_chunks and torch.is_grad_enabled() and h.requires_grad:
                    total = total + checkpoint(_chunk_ce_sum, project, h, t, self.ignore_index, use_reentrant=False)
                else:
                    total = total + _chunk_ce_sum(project, h, t, self.ignore_index)
        if self.reduction == "sum":
            return total
        return total / (targets != self.ignore_index).sum().clamp(min=1)


def count_loss_tokens(labels: torch.Tensor, ignore_index: int = CROSS_ENTROPY_IGNORE_IDX) -> torch.Tensor:
    """Number of positions that contribute to the loss (after the shift)."""
    return (labels[:, 1:] != ignore_index).sum()


class LogitsLoss(nn.Module):
    """Any ``loss(logits, labels)`` module (``torch.nn.CrossEntropyLoss``, torchtune's chunked
    losses, your own) behind the trainer's call ``(hidden, labels, project, frozen_weight)``.

    The logits are made whole (``project(hidden)``, in float32 as torchtune's decoder returns them)
    and handed over as torchtune's recipes hand them: a list of ``num_output_chunks`` chunks along
    the sequence with labels ``[b, s]`` when the loss has a ``num_output_chunks`` attribute
    (torchtune's ``CEWithChunkedOutputLoss`` convention), else flattened to ``[b*s, vocab]`` and
    ``[b*s]``; the labels are shifted to the next token, padded with the loss's ``ignore_index``.
    A loss built with ``reduction="sum"`` is returned as it is; any other result is taken as the
    mean over the labels that are not ``ignore_index`` (torchtune's contract) and multiplied back
    into a sum. This path keeps the ``[b, s, vocab]`` logits; `ChunkedCrossEntropyLoss` does not.
    """

    def __init__(self, loss: nn.Module, component: str, sums: bool) -> None:
        super().__init__()
        self.loss = loss
        self.component = component
        self.sums = sums
        self.ignore_index = int(getattr(loss, "ignore_index", CROSS_ENTROPY_IGNORE_IDX))
        self._checked = False

    def forward(
        self, hidden: torch.Tensor, labels: torch.Tensor, project: Projection, frozen_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        targets = shift_labels(labels, self.ignore_index)
        logits = project(hidden).float()
        chunks = getattr(self.loss, "num_output_chunks", None)
        if chunks is not None:
            args = (list(logits.chunk(int(chunks), dim=1)), targets)
        else:
            args = (logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        try:
            value = self.loss(*args)
        except (TypeError, ValueError, RuntimeError) as e:
            if self._checked or isinstance(e, torch.OutOfMemoryError):
                raise
            raise ConfigError(
                f"loss._component_ {self.component} failed on (logits, labels): {str(e).splitlines()[0]}",
                fix="use a loss called as loss(logits, labels), e.g. torch.nn.CrossEntropyLoss or "
                "tuner.training.loss.ChunkedCrossEntropyLoss",
            ) from None
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ConfigError(
                f"loss._component_ {self.component} returned {shape}, not one number",
                fix="set its reduction to 'mean' or 'sum' (tuner sums over tokens itself)",
            )
        self._checked = True
        value = value.reshape(())
        return value if self.sums else value * (targets != self.ignore_index).sum()


def build_loss(node: Any) -> nn.Module:
    """The trainer's loss from the config's ``loss`` node (None: `ChunkedCrossEntropyLoss`), called
    as ``loss(hidden, labels, project, frozen_weight)`` and returning the sum over tokens.

    `ChunkedCrossEntropyLoss` and its subclasses keep their memory-lean path; any other loss is
    wrapped in `LogitsLoss`, built with ``reduction="sum"`` when it takes a ``reduction``
    argument. A loss that cannot be called with ``(logits, labels)`` is a ConfigError naming it.
    """
    if node is None:
        return ChunkedCrossEntropyLoss(reduction="sum")
    component = (
        str(OmegaConf.select(node, "_component_", default=""))
        if OmegaConf.is_config(node)
        else str(node.get("_component_", ""))
    )
    cls = resolve_component(component, "loss")
    if isinstance(cls, type) and issubclass(cls, ChunkedCrossEntropyLoss):
        return instantiate(node, reduction="sum")
    try:
        takes_reduction = "reduction" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_reduction = False
    loss = instantiate(node, reduction="sum") if takes_reduction else instantiate(node)
    forward = getattr(loss, "forward", loss)
    try:
        required = [
            p
            for p in inspect.signature(forward).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        required = []
    if len(required) > 2 or not callable(loss):
        raise ConfigError(
            f"loss._component_ {component} cannot be called as loss(logits, labels)"
            + (f": it needs {', '.join(p.name for p in required)}" if required else ""),
            fix="use a loss of (logits, labels), e.g. torch.nn.CrossEntropyLoss or "
            "tuner.training.loss.ChunkedCrossEntropyLoss",
        )
    return LogitsLoss(loss, component, sums=takes_reduction)
