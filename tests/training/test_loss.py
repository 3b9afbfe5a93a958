"""The memory-lean chunked loss equals plain cross-entropy over full logits, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.autograd_helpers import saved_tensor_shapes
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


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunks", [1, 3, 8])
def test_frozen_projection_loss_matches_full_cross_entropy_and_keeps_no_logits(reduction, chunks):
    """With the projection's weight frozen and passed as ``frozen_weight``, the hidden-state gradient
    is made in forward: same loss and gradient as plain cross-entropy, and nothing of the vocabulary's
    width is saved for backward (the plain path saves every chunk's logits)."""
    torch.manual_seed(0)
    b, s, d, v = 2, 13, 16, 50
    hidden = torch.randn(b, s, d, requires_grad=True)
    proj = torch.nn.Linear(d, v, bias=False).requires_grad_(False)
    labels = torch.randint(0, v, (b, s))
    labels[0, :4] = -100
    labels[1, -3:] = -100
    loss_fn = ChunkedCrossEntropyLoss(num_output_chunks=chunks, reduction=reduction)
    with saved_tensor_shapes() as saved:
        ours = loss_fn(hidden * 1.0, labels, proj, frozen_weight=proj.weight)
    (ours * 3.0).backward()  # an upstream factor, as gradient accumulation applies
    g_hidden = hidden.grad.clone()
    hidden.grad = None
    ref = F.cross_entropy(
        proj(hidden).reshape(-1, v), shift_labels(labels).reshape(-1), ignore_index=-100, reduction=reduction
    )
    (ref * 3.0).backward()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(g_hidden, hidden.grad, atol=1e-6, rtol=1e-5)
    assert not [shape for shape in saved if shape and shape[-1] == v], saved
    with saved_tensor_shapes() as saved:
        loss_fn(hidden * 1.0, labels, proj)
    assert [shape for shape in saved if shape and shape[-1] == v]  # the plain path does keep logits


def test_frozen_projection_loss_without_grad_gives_the_loss_only():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 8)
    proj = torch.nn.Linear(8, 20, bias=False).requires_grad_(False)
    labels = torch.randint(0, 20, (2, 9))
    loss_fn = ChunkedCrossEntropyLoss(num_output_chunks=4)
    with torch.no_grad():
        got = loss_fn(hidden, labels, proj, frozen_weight=proj.weight)
    torch.testing.assert_close(got, loss_fn(hidden, labels, proj))


def test_decoder_offers_its_output_weight_only_when_plain_and_frozen():
    from tuner.models.llama3_2 import llama3_2, lora_llama3_2
    from tuner.peft import get_adapter_params, set_trainable_params

    shape = dict(
        vocab_size=64, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16, intermediate_dim=32, max_seq_len=32
    )
    full = llama3_2(**shape)  # tied, trainable: the loss must keep its own backward (the weight gets a gradient)
    assert full.frozen_output_weight() is None
    lora = lora_llama3_2(**shape, lora_attn_modules=["q_proj"], lora_rank=2, lora_alpha=4)
    set_trainable_params(lora, get_adapter_params(lora))
    assert lora.frozen_output_weight() is lora.tok_embeddings.weight
    lora.final_softcap = 30.0  # Gemma 2: logits are tanh-capped, not a plain matmul
    assert lora.frozen_output_weight() is None
    adapted = lora_llama3_2(
        **shape,
        lora_attn_modules=["q_proj"],
        lora_rank=2,
        lora_alpha=4,
        apply_lora_to_output=True,
        tie_word_embeddings=False,
    )
    set_trainable_params(adapted, get_adapter_params(adapted))
    assert adapted.frozen_output_weight() is None  # a LoRA output projection is not a plain matmul


def test_frozen_projection_loss_projects_only_the_scored_rows_on_cpu():
    """Ignored rows (an SFT batch's prompt and padding) add 0 to the loss and its gradient, so on CPU the
    frozen-projection loss computes no logits for them: its matmul FLOPs follow the scored rows, and
    loss and hidden-state gradient equal those with every row scored (a chunk with none scored included)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    b, s, d, v = 2, 16, 8, 64
    hidden = torch.randn(b, s, d)
    weight = torch.randn(v, d)
    labels = torch.randint(0, v, (b, s))
    labels[:, : s // 2 + 1] = -100  # the shifted targets of each row's first half are ignored
    loss_fn = ChunkedCrossEntropyLoss(num_output_chunks=4, reduction="sum")

    def run(lab):
        h = hidden.clone().requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            loss = loss_fn(h, lab, None, frozen_weight=weight)
        loss.backward()
        return loss.detach(), h.grad, counter.get_total_flops()

    loss, grad, flops = run(labels)
    every = torch.randint(0, v, (b, s))  # all scored but each row's last position (no next token)
    _, _, flops_every = run(every)
    scored, scored_every = (int((shift_labels(x) != -100).sum()) for x in (labels, every))
    assert flops == flops_every * scored // scored_every  # 2 matmuls (logits, their gradient) per scored row only
    h = hidden.clone().requires_grad_(True)
    ref = F.cross_entropy((h @ weight.t()).reshape(-1, v), shift_labels(labels).reshape(-1), reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, h.grad)
    assert torch.count_nonzero(grad[:, : s // 2]) == 0


def test_loss_without_gradient_projects_only_the_scored_rows_on_cpu():
    """Evaluation (no gradient) scores only the rows with a target on CPU, through any projection: FLOPs
    follow the scored rows, and the loss equals plain cross-entropy over every row."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    b, s, d, v = 2, 16, 8, 64
    hidden = torch.randn(b, s, d)
    proj = torch.nn.Linear(d, v, bias=False)
    labels = torch.randint(0, v, (b, s))
    labels[0, :10] = -100
    labels[1, 4:] = -100  # whole chunks of row 1 score nothing
    loss_fn = ChunkedCrossEntropyLoss(num_output_chunks=4, reduction="sum")
    every = torch.randint(0, v, (b, s))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            loss = loss_fn(hidden, labels, proj)
        with FlopCounterMode(display=False) as counter_every:
            loss_fn(hidden, every, proj)
    scored, scored_every = (int((shift_labels(x) != -100).sum()) for x in (labels, every))
    assert counter.get_total_flops() == counter_every.get_total_flops() * scored // scored_every
    ref = F.cross_entropy(proj(hidden).reshape(-1, v), shift_labels(labels).reshape(-1), reduction="sum")
    torch.testing.assert_close(loss, ref.detach())
