"""The memory-lean chunked loss equals plain cross-entropy over full logits, values and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuner.training.loss import ChunkedCrossEntropyLoss, cross_entropy_sum, shift_labels


@pytest.mark.parametrize("checkpoint_chunks", [False, True])
@pytest.mark.parametrize("chunks", [1, 3, 8])
def test_chunked_loss_matches_full_cross_entropy(checkpoint_chunks, chunks):
    torch.manual_seed(0)
    b, s, d, v = 2, 13, 16, 50
    hidden = torch.randn(b, s, d, requires_grad=True)
    proj = torch.nn.Linear(d, v, bias=False)
    labels = torch.randint(0, v, (b, s))
    labels[0, :4] = -100
    labels[1, -3:] = -100
    ours = ChunkedCrossEntropyLoss(num_output_chunks=chunks, checkpoint_chunks=checkpoint_chunks)(hidden, labels, proj)
    ours.backward()
    g_hidden, g_w = hidden.grad.clone(), proj.weight.grad.clone()
    hidden.grad = None
    proj.weight.grad = None
    ref = F.cross_entropy(proj(hidden).reshape(-1, v), shift_labels(labels).reshape(-1), ignore_index=-100)
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(g_hidden, hidden.grad, atol=1e-6)
    assert torch.allclose(g_w, proj.weight.grad, atol=1e-6)


def test_cross_entropy_sum_in_bf16_matches_float32_reference():
    torch.manual_seed(1)
    logits = (torch.randn(64, 1000) * 3).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 1000, (64,))
    targets[::7] = -100
    loss = cross_entropy_sum(logits, targets)
    loss.backward()
    ref_logits = logits.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_logits, targets, ignore_index=-100, reduction="sum")
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5)
    assert logits.grad.dtype == torch.bfloat16
    assert torch.allclose(logits.grad.float(), ref_logits.grad, atol=1e-2)


def test_all_ignored_gives_zero_loss_and_gradient():
    hidden = torch.randn(1, 5, 4, requires_grad=True)
    proj = torch.nn.Linear(4, 7, bias=False)
    loss = ChunkedCrossEntropyLoss(reduction="mean")(hidden, torch.full((1, 5), -100), proj)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(hidden.grad) == 0
