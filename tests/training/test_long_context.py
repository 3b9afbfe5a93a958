"""Long-context memory features on a tiny model on CPU (issue #26): offloaded activation checkpoints
and the sequence-tiled MLP give the gradients of the plain paths; offloading frees the layers'
inputs after forward; the lean RMSNorm gives autograd's gradients; the 8B size builders take
``max_seq_len``. (FSDP2's refusal of offloaded checkpoints: tests/cli/test_bad_inputs.py.)"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from tuner.checkpoint.keys import clean_tuner_key
from tuner.errors import ConfigError
from tuner.models import llama3_1
from tuner.training import memory

DIMS = dict(vocab_size=128, num_layers=3, num_heads=4, num_kv_heads=2, embed_dim=32, intermediate_dim=80)


def tiny(seed: int = 0, *, quantize_base: bool = False, dropout: float = 0.0) -> torch.nn.Module:
    """A Llama 3.1 LoRA decoder (rank 4 on every linear layer) with random adapters that are not zero."""
    torch.manual_seed(seed)
    model = llama3_1.lora_llama3_1(
        ["q_proj", "k_proj", "v_proj", "output_proj"],
        apply_lora_to_mlp=True,
        lora_rank=4,
        lora_alpha=8,
        lora_dropout=dropout,
        quantize_base=quantize_base,
        max_seq_len=256,
        **DIMS,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b.weight"):
                p.normal_(0, 0.02)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model.float()


def grads(model: torch.nn.Module, tokens: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the dropout masks
    model(tokens).float().pow(2).mean().backward()
    return {clean_tuner_key(n): p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


TOKENS = torch.randint(0, 128, (2, 48), generator=torch.Generator().manual_seed(3))


def assert_same_gradients(reference: torch.nn.Module, model: torch.nn.Module, tokens=TOKENS, **tolerance) -> None:
    expected, got = grads(reference, tokens), grads(model, tokens)
    assert expected.keys() == got.keys() and len(got) == 3 * 7 * 2  # every adapter of every layer got one
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **tolerance, msg=name)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_offloaded_checkpoints_give_the_checkpointed_gradients(dropout):
    plain, offloaded = tiny(dropout=dropout), tiny(dropout=dropout)
    memory.apply_activation_checkpointing(plain)
    memory.apply_activation_checkpointing(offloaded, offload=True)
    assert_same_gradients(plain, offloaded, rtol=0, atol=1e-6)


def _layer_inputs_alive_after_forward(offload: bool, device: str = "cpu") -> int:
    """How many of the layers' input tensors are still alive between forward and backward."""
    model = tiny().to(device)
    memory.apply_activation_checkpointing(model, offload=offload)
    inputs: list[weakref.ref] = []
    for layer in model.layers:
        layer.register_forward_pre_hook(lambda _m, args: inputs.append(weakref.ref(args[0])))
    with memory.activation_offloading(True):  # as the trainer runs forward with offloading on
        loss = model.hidden(TOKENS.to(device)).pow(2).mean()
    gc.collect()
    alive = sum(ref() is not None for ref in inputs)
    loss.backward()  # the offloaded inputs come back for it
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    return alive


def test_offloading_frees_the_checkpointed_layers_inputs_after_forward():
    # torch's checkpoint wrapper keeps every layer's input on the device, save_on_cpu or not (issue #26)
    assert _layer_inputs_alive_after_forward(offload=False) == DIMS["num_layers"]
    assert _layer_inputs_alive_after_forward(offload=True) == 0


@pytest.mark.parametrize("quantize_base", [False, True])
def test_sequence_tiled_mlp_gives_the_untiled_gradients(quantize_base):
    untiled, tiled = tiny(quantize_base=quantize_base), tiny(quantize_base=quantize_base)
    memory.tile_mlps(tiled, 20)  # 96 tokens: chunks of 20, the last one 16
    with torch.no_grad():
        torch.testing.assert_close(tiled(TOKENS), untiled(TOKENS), rtol=0, atol=1e-6)
    assert_same_gradients(untiled, tiled, rtol=1e-5, atol=1e-6)


def test_tiled_mlp_with_dropout_recomputes_the_forward_masks():
    """Dropout draws its masks chunk by chunk; backward must see the masks forward used: the
    reference is plain autograd over the same chunks, in the same order, from the same seed."""
    mlp = tiny(dropout=0.3).layers[0].mlp
    x = torch.randn(2, 20, 32, requires_grad=True)
    weights = [p for p in mlp.parameters() if p.requires_grad]

    def gradients(forward):  # .backward(): the tiled weights' gradients accumulate in .grad
        for t in (x, *weights):
            t.grad = None
        torch.manual_seed(5)
        forward().pow(2).sum().backward()
        return [t.grad.clone() for t in (x, *weights)]

    expected = gradients(lambda: torch.cat([mlp.untiled(c) for c in x.reshape(-1, 32).split(8)]).view(2, 20, 32))
    mlp.chunk_size = 8
    got = gradients(lambda: mlp(x))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_tiled_mlp_under_offloaded_checkpoints_with_dropout():
    """Both features together: the recomputes replay the same dropout masks as the tiled run alone."""
    tiled, both = tiny(dropout=0.1), tiny(dropout=0.1)
    for model in (tiled, both):
        memory.tile_mlps(model, 16)
    memory.apply_activation_checkpointing(both, offload=True)
    assert_same_gradients(tiled, both, rtol=1e-5, atol=1e-6)


def test_tiled_mlp_reaches_the_weights_when_its_input_needs_no_gradient():
    mlp = tiny().layers[0].mlp
    mlp.chunk_size = 8
    x = torch.randn(1, 24, 32)  # requires_grad False
    mlp(x).sum().backward()
    assert mlp.w1.lora_a.weight.grad is not None and mlp.w1.lora_a.weight.grad.abs().sum() > 0


def test_tiling_a_model_without_the_gated_mlp_is_refused():
    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = torch.nn.Linear(4, 4)

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([Layer()])
    with pytest.raises(ConfigError, match="mlp_chunk_size.*layer 0's is Linear"):
        memory.tile_mlps(model, 64)


def test_size_builders_take_max_seq_len():
    """A long-context run asks for more positions than the release's 131,072; RoPE's tables follow
    and the first positions stay as they were (Llama 3.1's scaling does not depend on the length)."""
    with torch.device("meta"):
        model = llama3_1.qlora_llama3_1_8b(["q_proj"], max_seq_len=600_000)
        default = llama3_1.llama3_1_8b()
    assert model.max_seq_len == model.rope.max_seq_len == 600_000
    assert default.max_seq_len == 131_072
    short = llama3_1.llama3_1(**DIMS, max_seq_len=64).rope
    long = llama3_1.llama3_1(**DIMS, max_seq_len=1024).rope
    assert long.cos.shape[0] == 1024
    assert torch.equal(long.cos[:64], short.cos) and torch.equal(long.sin[:64], short.sin)


@pytest.mark.parametrize("offset", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_rms_norm_gives_autograds_output_and_gradients(monkeypatch, offset, dtype):
    """The lean norm (input and 1/rms saved, blocks of rows) against autograd through HF's operations."""
    from tuner.models import norms

    monkeypatch.setattr(norms, "ROWS_ELEMENTS", 7 * 32)  # 7 rows a block: 3 blocks and a short one
    norm = norms.RMSNorm(32, eps=1e-5, offset=offset).to(dtype)
    with torch.no_grad():
        norm.scale.normal_(0.5, 0.1)
    x = torch.randn(3, 8, 32, dtype=dtype, requires_grad=True)
    grad = torch.randn(3, 8, 32, dtype=dtype)

    def run(fn):
        x.grad, norm.scale.grad = None, None
        out = fn()
        out.backward(grad)
        return out.detach(), x.grad, norm.scale.grad

    expected = run(lambda: norms._rms_norm(x, norm.scale, norm.eps, offset)[0])  # plain autograd
    got = run(lambda: norm(x))
    assert torch.equal(got[0], expected[0])  # the forward is the same operations
    assert torch.equal(got[1], expected[1])  # the input's gradient: autograd's operations row by row
    # the scale's: the blocks' sums added in float32 (autograd sums all rows at once)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype is torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got[2], expected[2], **tol)


@pytest.mark.gpu
@pytest.mark.parametrize("quantize_base", [False, True])
def test_offloaded_checkpoints_and_tiled_mlp_on_cuda(quantize_base):
    """The CUDA path: host copies on a side stream, prefetch, pinned pieces; NF4 MLPs tiled."""
    plain, both = tiny(quantize_base=quantize_base).cuda(), tiny(quantize_base=quantize_base).cuda()
    memory.apply_activation_checkpointing(plain)
    memory.tile_mlps(both, 20)
    memory.apply_activation_checkpointing(both, offload=True)
    assert_same_gradients(plain, both, TOKENS.cuda(), rtol=1e-4, atol=1e-5)
    assert _layer_inputs_alive_after_forward(offload=True, device="cuda") == 0


def test_compiled_layers_keep_autograds_rms_norm(monkeypatch):
    from tuner.models import norms

    norm, x = norms.RMSNorm(32), torch.randn(2, 5, 32, requires_grad=True)
    assert type(norm(x).grad_fn).__name__ == "_LeanRMSNormBackward"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert type(norm(x).grad_fn).__name__ == "MulBackward0"  # scale * x_hat, traced as it is
