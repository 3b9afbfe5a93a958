"""FP8 base weights on an FP8 GPU (Ada / Hopper): `torch._scaled_mm` against the CPU emulation and
a bf16 reference, eager against compiled, and a LoRA layer over an FP8 base under compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuner.peft import LoRALinear
from tuner.quantization import linear_fp8, quantize_fp8
from tuner.quantization.fp8 import scaled_mm_available

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    device = torch.device("cuda")
    if not scaled_mm_available(device):
        pytest.skip("needs FP8 tensor cores (compute capability 8.9+)")
    return device


def _case(device, m=4096, k=2048, n=8192, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * 0.02).to(device, torch.bfloat16)
    x = torch.randn(m, k, generator=g).to(device, torch.bfloat16)
    grad = torch.randn(m, n, generator=g).to(device, torch.bfloat16)
    return w, x, grad


def _fwd_bwd(fn, x, grad):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    y.backward(grad)
    return y.float(), x.grad.float()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("fp8_input_grad", [True, False], ids=["fp8_all", "fp8_fwd"])
def test_scaled_mm_matches_the_emulation_and_is_close_to_bf16(cuda, fp8_input_grad):
    w, x, grad = _case(cuda)
    q = quantize_fp8(w, fp8_input_grad=fp8_input_grad)
    y, dx = _fwd_bwd(lambda t: linear_fp8(t, q), x, grad)
    q_cpu = quantize_fp8(w.cpu(), fp8_input_grad=fp8_input_grad)
    y_emu, dx_emu = _fwd_bwd(lambda t: linear_fp8(t, q_cpu), x.cpu().float(), grad.cpu().float())
    # same quantized operands: only the accumulation order and the bf16 output rounding differ
    assert _rel(y.cpu(), y_emu) < 5e-3 and _rel(dx.cpu(), dx_emu) < 5e-3
    y_ref, dx_ref = _fwd_bwd(lambda t: F.linear(t, w), x, grad)
    assert _rel(y, y_ref) < 0.05 and _rel(dx, dx_ref) < 0.05


def test_compiled_lora_layer_over_fp8_matches_eager(cuda):
    torch.manual_seed(0)
    layer = LoRALinear(1024, 2048, 16, 32, base_dtype="fp8", init_lora_weights=False, device=cuda)
    layer.to(torch.bfloat16)
    _assert_compiled_matches_eager(layer, *_layer_inputs(cuda))


def _layer_inputs(device):
    x = torch.randn(2, 512, 1024, device=device, dtype=torch.bfloat16)
    return x, torch.randn(2, 512, 2048, device=device, dtype=torch.bfloat16)


def _assert_compiled_matches_eager(layer, x, grad):
    """The compiled LoRA layer's output, input gradient and B gradient against eager's; eager's (y, dx)."""
    layer.lora_b.weight.grad = None
    eager_y, eager_dx = _fwd_bwd(layer, x, grad)
    eager_db = layer.lora_b.weight.grad.clone()
    layer.lora_b.weight.grad = None
    compiled_y, compiled_dx = _fwd_bwd(torch.compile(layer), x, grad)
    assert _rel(compiled_y, eager_y) < 1e-2 and _rel(compiled_dx, eager_dx) < 1e-2
    assert _rel(layer.lora_b.weight.grad.float(), eager_db.float()) < 1e-2
    return eager_y, eager_dx


def test_compiled_block_with_shared_input_quantization_matches_eager(cuda):
    from tuner.models.smollm2 import lora_smollm2

    torch.manual_seed(0)
    dims = dict(vocab_size=256, num_layers=1, num_heads=16, num_kv_heads=4, embed_dim=1024, intermediate_dim=2048)
    model = lora_smollm2(["q_proj", "v_proj"], apply_lora_to_mlp=True, max_seq_len=512, base_dtype="fp8", **dims)
    model.to(cuda, torch.bfloat16)
    block = model.layers[0]
    x = torch.randn(2, 512, 1024, device=cuda, dtype=torch.bfloat16)
    grad = torch.randn_like(x)
    eager_y, eager_dx = _fwd_bwd(block, x, grad)
    compiled_y, compiled_dx = _fwd_bwd(torch.compile(block, fullgraph=True), x, grad)
    assert _rel(compiled_y, eager_y) < 1e-2 and _rel(compiled_dx, eager_dx) < 1e-2


@pytest.mark.parametrize("fp8_input_grad", [True, False], ids=["fp8_all", "fp8_fwd"])
def test_fp8_output_loss_matches_the_emulation_and_is_close_to_bf16(cuda, fp8_input_grad):
    from tuner.training.loss import ChunkedCrossEntropyLoss

    w, hidden, _ = _case(cuda, m=2048, k=2048, n=16384)
    labels = torch.randint(0, w.shape[0], (1, hidden.shape[0]), device=cuda)
    loss_fn = ChunkedCrossEntropyLoss(num_output_chunks=4, reduction="sum")

    def run(h, weight):
        h = h.detach().clone().requires_grad_()
        loss = loss_fn(h[None], labels.to(h.device), None, weight)
        loss.backward()
        return loss.float(), h.grad.float()

    q = quantize_fp8(w, fp8_input_grad=fp8_input_grad)
    loss, grad = run(hidden, q)
    loss_emu, grad_emu = run(hidden.cpu().float(), quantize_fp8(w.cpu(), fp8_input_grad=fp8_input_grad))
    assert abs(float(loss) / float(loss_emu) - 1) < 5e-3 and _rel(grad.cpu(), grad_emu) < 2e-2
    loss_ref, grad_ref = run(hidden, w)
    assert abs(float(loss) / float(loss_ref) - 1) < 0.01 and _rel(grad, grad_ref) < 0.05


@pytest.mark.parametrize("save_dense", [False, True], ids=["requantize_in_backward", "keep_fp8_copy"])
def test_compiled_qlora_layer_computing_in_fp8_matches_eager_and_is_close_to_nf4(cuda, save_dense):
    """QLoRA with base_dtype: fp8 on the GPU: the Triton NF4 kernel, then `_scaled_mm`, compiled as the
    recipes compile a layer; eager is the reference, the plain NF4 (bf16 GEMM) layer the sanity bound."""
    from tuner.quantization import compute_nf4_in_fp8, keep_dense_weights_for_backward

    torch.manual_seed(0)
    w = torch.randn(2048, 1024) * 0.02
    layer = LoRALinear(1024, 2048, 16, 32, weight=w, quantize_base=True, init_lora_weights=False).to(cuda)
    layer.to(torch.bfloat16)
    x, grad = _layer_inputs(cuda)
    nf4_y, nf4_dx = _fwd_bwd(layer, x, grad)
    compute_nf4_in_fp8(layer, True)
    keep_dense_weights_for_backward(layer, save_dense)
    eager_y, eager_dx = _assert_compiled_matches_eager(layer, x, grad)
    assert 0 < _rel(eager_y, nf4_y) < 0.05 and 0 < _rel(eager_dx, nf4_dx) < 0.05


@pytest.mark.parametrize("shape", [(128256, 2048), (4096, 14336), (130, 257), (1, 300)])
def test_fp8_transpose_kernel_equals_torchs_copy(cuda, shape):
    """The tiled transposed copy (`fp8_triton`) that eager FP8 backward multiplies by, byte for byte."""
    from tuner.quantization import fp8_triton

    t = torch.randint(0, 256, shape, dtype=torch.uint8, device=cuda).view(torch.float8_e4m3fn)
    out = fp8_triton.transpose_bytes(t)
    assert out.dtype == t.dtype and torch.equal(out.view(torch.uint8), t.t().contiguous().view(torch.uint8))


@pytest.mark.parametrize("shape", [(1024, 128256), (37, 1000)])
def test_fp8_loss_kernel_matches_the_tensor_ops(cuda, shape):
    """The Triton chunk of ``fp8_output``'s loss (`loss_triton`) on the GPU: the tensor ops' row losses,
    their row scales within bf16's rounding, and a gradient no farther from the exact one than theirs."""
    from tuner.training import loss as loss_module
    from tuner.training import loss_triton

    rows, vocab = shape
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=g) * 3).to(cuda, torch.bfloat16)
    targets = torch.randint(0, vocab, (rows,), generator=g).to(cuda)
    targets[::7] = -100
    scale = (torch.rand(vocab, generator=g) * 1e-2 + 1e-4).to(cuda)
    losses, grad = loss_triton.ce_grad_fp8(logits, targets, -100, scale, scale.log())
    valid = targets != -100
    safe = targets.masked_fill(~valid, 0)
    ref_losses, ref_grad = torch.compile(loss_module._ce_forward_backward_fp8, dynamic=True)(logits, safe, valid, scale)
    assert torch.allclose(losses, ref_losses, rtol=1e-5, atol=1e-4)
    assert torch.allclose(grad.scale, ref_grad.scale, rtol=2**-7)
    exact = (torch.softmax(logits.double(), -1) - F.one_hot(safe, vocab).double()) * scale.double() * valid[:, None]
    largest = exact.abs().amax(1).clamp(min=1e-30)
    error = (grad.data.double() * grad.scale - exact).abs().amax(1) / largest
    ref_error = (ref_grad.data.double() * ref_grad.scale - exact).abs().amax(1) / largest
    assert (error <= ref_error + 2**-9).all() and (error <= 2**-4).all()
    assert torch.equal(grad.data.float().abs().amax(1), torch.where(valid, 448.0, 0.0))
