"""The FP8 speed steps of issue #27 on CPU (FP8 GEMMs emulated): q/k/v and the MLP's gate/up share one
quantization of their input (the same outputs and gradients bit for bit, fewer quantizations, also in a
compiled graph), and ``fp8_output``'s logits GEMM of the loss in FP8 (loss and hidden-state gradient
against the formula; loss within the e4m3 rounding bound of the dense loss; keys unchanged; a stale or
refused FP8 copy is one clear error)."""

from __future__ import annotations

import collections

import pytest
import torch

from tuner.errors import ConfigError, TunerError
from tuner.models.smollm2 import lora_smollm2
from tuner.peft import get_adapter_params, initialize_adapters, set_trainable_params
from tuner.quantization import FP8Weight, fp8, has_fp8_copy
from tuner.quantization.fp8 import quantize_rows
from tuner.training.loss import ChunkedCrossEntropyLoss

DIMS = dict(vocab_size=256, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128)
LORA = dict(lora_rank=4, lora_alpha=8, max_seq_len=64)


def _model(seed: int = 0, attn=("q_proj", "v_proj"), **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = lora_smollm2(list(attn), **{**LORA, **DIMS, **options})
    with torch.no_grad():  # non-zero B, so that the adapters' gradients flow back into the inputs
        for name, p in model.named_parameters():
            if "lora_b" in name or "lambda_b" in name:
                p.normal_(std=0.05)
    set_trainable_params(model, get_adapter_params(model))  # the base frozen, as LoRA trains it
    return model


def _step(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits = model(tokens)
    logits.float().square().mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "options",
    [
        {"base_dtype": "fp8_all", "apply_lora_to_mlp": True},
        {"base_dtype": "fp8_fwd", "attn": ("q_proj", "k_proj", "v_proj", "output_proj")},
        {"base_dtype": "fp8_all", "use_vera": True, "lora_rank": 16},
    ],
    ids=["fp8_all-mlp", "fp8_fwd-qkvo", "vera"],
)
def test_shared_input_quantization_is_the_per_projection_path_bit_for_bit(monkeypatch, options):
    options = {**options}
    attn = options.pop("attn", ("q_proj", "v_proj"))
    calls = collections.Counter()
    real = fp8.quantize_rows

    def counting(t):
        calls[t.data_ptr()] += 1
        return real(t)

    monkeypatch.setattr(fp8, "quantize_rows", counting)
    tokens = torch.randint(0, 256, (2, 9))
    results, forward_quantizations = {}, {}
    for shared in (True, False):
        model = _model(attn=attn, fp8_shared_input=shared, **options)
        with torch.no_grad():
            calls.clear()
            model(tokens)
            forward_quantizations[shared] = sum(calls.values())
        results[shared] = _step(model, tokens)
    (logits, grads), (ref_logits, ref_grads) = results[True], results[False]
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    # per layer: x of q/k/v once instead of 3 times, the MLP's x once instead of twice
    assert forward_quantizations == {True: 4 * 2, False: 7 * 2}


def test_shared_input_quantization_compiles_into_one_graph_with_fewer_quantizations():
    from torch._dynamo.backends.common import aot_autograd

    graphs: dict[str, list[torch.fx.GraphModule]] = collections.defaultdict(list)

    def keep(kind):
        def compiler(gm, _):
            graphs[kind].append(gm)
            return gm.forward

        return compiler

    def amax_count(kind: str) -> int:
        nodes = (n for gm in graphs[kind] for n in gm.graph.nodes)
        return sum(n.op == "call_function" and "amax" in str(n.target) for n in nodes)

    tokens = torch.randint(0, 256, (2, 9))
    counts = {}
    for shared in (True, False):
        graphs.clear()
        torch._dynamo.reset()
        model = _model(fp8_shared_input=shared, base_dtype="fp8_all", apply_lora_to_mlp=True, num_layers=1)
        backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"))
        layer = torch.compile(model.layers[0], fullgraph=True, backend=backend)
        x = model.tok_embeddings(tokens).detach().requires_grad_()
        layer(x, rope=None).sum().backward()
        counts[shared] = amax_count("fw"), amax_count("bw")
    torch._dynamo.reset()
    # forward: the attention's and the MLP's inputs, plus output_proj's and w2's: 4 against 7; backward:
    # each of the 7 output gradients, either way (the compiler does not merge the forward's repeats itself)
    assert counts == {True: (4, 7), False: (7, 7)}


def _hidden_and_targets(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        hidden = model.hidden(tokens)
    labels = tokens.clone()
    labels[0, 3] = -100  # an ignored position
    return hidden, labels


def _loss_and_grad(hidden, labels, model, frozen_weight, chunks=3) -> tuple[torch.Tensor, torch.Tensor]:
    h = hidden.clone().requires_grad_()
    loss = ChunkedCrossEntropyLoss(num_output_chunks=chunks, reduction="sum")(h, labels, model.project, frozen_weight)
    loss.backward()
    return loss.detach(), h.grad


def _reference(hidden, labels, q: FP8Weight) -> tuple[torch.Tensor, torch.Tensor]:
    """The FP8 logits GEMM and its input gradient written out from their definitions, in float64."""
    h2 = hidden.reshape(-1, hidden.shape[-1])
    hq, hs = quantize_rows(h2)
    w = q.data.double() * q.scale.double()[:, None]
    logits = (hq.double() * hs.double()) @ w.t()
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], 1).reshape(-1)
    valid = targets != -100
    loss = torch.nn.functional.cross_entropy(logits, targets.clamp(min=0), reduction="none")[valid].sum()
    g = torch.softmax(logits, -1) - torch.nn.functional.one_hot(targets.clamp(min=0), logits.shape[-1])
    g = (g * valid[:, None]).float()
    if q.fp8_input_grad:
        gq, gs = quantize_rows(g * q.scale)
        dh = (gq.double() * gs.double()) @ q.data.double()
    else:
        dh = g.double() @ w
    return loss, dh.view(hidden.shape)


@pytest.mark.parametrize("base_dtype", ["fp8_all", "fp8_fwd"])
def test_fp8_output_loss_and_hidden_gradient_are_the_fp8_formula(base_dtype):
    model = _model(base_dtype=base_dtype, fp8_output=True)
    dense_model = _model(base_dtype=base_dtype)
    assert sorted(model.state_dict()) == sorted(dense_model.state_dict())  # the copy is not checkpointed
    q = model.frozen_output_weight()
    assert isinstance(q, FP8Weight) and q.shape == model.tok_embeddings.weight.shape
    assert q.fp8_input_grad is (base_dtype == "fp8_all")
    tokens = torch.randint(0, 256, (2, 13))
    hidden, labels = _hidden_and_targets(model, tokens)
    loss, grad = _loss_and_grad(hidden, labels, model, q)
    ref_loss, ref_grad = _reference(hidden, labels, q)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-6)
    # against the dense tied weight: within what e4m3 rounding of both operands can move each logit
    # (per value: 2^-4 relative for normal numbers, 2^-10 of the row's scale below), a token's loss
    # lse(z) - z_y moving by at most twice its largest logit change
    dense_loss, _ = _loss_and_grad(hidden, labels, model, model.tok_embeddings.weight.detach())
    h2, w = hidden.reshape(-1, hidden.shape[-1]), model.tok_embeddings.weight.detach()
    err_h = torch.maximum(h2.abs() * 2**-4, quantize_rows(h2)[1] * 2**-10)
    err_w = torch.maximum(w.abs() * 2**-4, q.scale[:, None] * 2**-10)
    logit_bound = h2.abs() @ err_w.t() + err_h @ w.abs().t() + err_h @ err_w.t()
    scored = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], 1).reshape(-1) != -100
    bound = float(2 * logit_bound.amax(1)[scored].sum())
    assert 0 < abs(float(loss - dense_loss)) <= bound, (float(loss - dense_loss), bound)
    # that worst case (26% of this loss) needs every rounding error aligned; independent ones average out:
    # measured 0.68 of 1369 (5e-4), so 1% still catches a wrong scale layout (which moves logits ~100%)
    assert abs(float(loss - dense_loss)) < 0.01 * float(dense_loss)


def test_fp8_output_copy_follows_the_loaded_weight_and_a_stale_one_is_an_error():
    model = _model(base_dtype="fp8", fp8_output=True)
    before = model.frozen_output_weight()
    before_bits, before_scale = before.data.view(torch.uint8).clone(), before.scale.clone()
    with torch.no_grad():
        model.tok_embeddings.weight.mul_(2)  # a load or repair of the embedding after the copy was made
    with pytest.raises(TunerError, match="FP8 copy.*not made from its current weight") as e:
        model.frozen_output_weight()
    assert "initialize_adapters" in e.value.fix
    initialize_adapters(model)  # the trainer's step after loading the base
    after = model.frozen_output_weight()
    assert torch.equal(after.data.view(torch.uint8), before_bits)  # the same bits, twice the scales
    torch.testing.assert_close(after.scale, 2 * before_scale, rtol=1e-6, atol=0)
    with torch.device("meta"):  # built on meta: filled by initialize_adapters, never before
        meta = lora_smollm2(["q_proj"], **LORA, **DIMS, base_dtype="fp8", fp8_output=True)
    assert has_fp8_copy(meta.output)
    meta.tok_embeddings.weight.requires_grad_(False)
    with pytest.raises(TunerError, match="FP8 copy"):
        meta.frozen_output_weight()


def test_fp8_output_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="needs an FP8 base") as e:
        lora_smollm2(["q_proj"], **LORA, **DIMS, fp8_output=True)
    assert "base_dtype" in e.value.fix
    from tuner.models.llama3 import lora_llama3

    untied = dict(vocab_size=256, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=64, max_seq_len=64)
    with pytest.raises(ConfigError, match="apply_lora_to_output"):
        lora_llama3(["q_proj"], apply_lora_to_output=True, base_dtype="fp8", fp8_output=True, **untied)
    from tuner.models.gemma2 import lora_gemma2

    gemma = dict(vocab_size=256, num_layers=1, num_heads=4, head_dim=16, num_kv_heads=2, embed_dim=64)
    with pytest.raises(ConfigError, match="soft-caps") as e:
        lora_gemma2(["q_proj"], intermediate_dim=128, max_seq_len=64, base_dtype="fp8", fp8_output=True, **gemma)
    assert "Gemma 2" in e.value.fix


def test_fp8_output_with_a_sharded_output_projection_is_a_config_error():
    class Shard(torch.Tensor):  # stands for FSDP2's DTensor: any tensor type but a plain one
        pass

    model = _model(base_dtype="fp8", fp8_output=True)
    model.tok_embeddings._parameters["weight"] = model.tok_embeddings.weight.detach().as_subclass(Shard)
    with pytest.raises(ConfigError, match="FSDP2 shards it") as e:
        model.frozen_output_weight()
    assert "single-device" in e.value.fix
