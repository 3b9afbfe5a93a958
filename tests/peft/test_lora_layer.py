"""LoRALinear / VeRA layers against HF PEFT's own layers: same weights in, same outputs and grads out."""

import copy
import math

import pytest
import torch
from peft import LoraConfig, VeraConfig, get_peft_model
from peft.tuners.lora import Linear as PeftLoraLinear
from torch import nn

from tuner.errors import TunerError
from tuner.peft import (
    LoRALinear,
    apply_lora,
    disable_adapters,
    get_adapter_params,
    lora_plus_param_groups,
    set_trainable_params,
)

IN, OUT, R, ALPHA = 24, 16, 4, 8


def _pair(use_dora=False, use_rslora=False, dropout=0.0, bias=True, init=True, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(IN, OUT, bias=bias)
    cfg = LoraConfig(
        r=R, lora_alpha=ALPHA, lora_dropout=dropout, use_dora=use_dora, use_rslora=use_rslora, init_lora_weights=init
    )
    ref = PeftLoraLinear(copy.deepcopy(base), "default", config=cfg, r=R, lora_alpha=ALPHA)
    ours = LoRALinear(
        IN,
        OUT,
        R,
        ALPHA,
        dropout=dropout,
        use_dora=use_dora,
        use_rslora=use_rslora,
        init_lora_weights=init,
        weight=base.weight.detach().clone(),
        bias=None if base.bias is None else base.bias.detach().clone(),
    )
    return ref, ours


def _randomize(ref, ours):
    """Non-trivial adapters (nonzero B) copied into both; DoRA magnitude re-derived then perturbed."""
    with torch.no_grad():
        a, b = torch.randn(R, IN) * 0.3, torch.randn(OUT, R) * 0.3
        ref.lora_A["default"].weight.copy_(a), ours.lora_a.weight.copy_(a)
        ref.lora_B["default"].weight.copy_(b), ours.lora_b.weight.copy_(b)
        if ours.use_dora:
            m = torch.rand(OUT) + 0.5
            ref.lora_magnitude_vector["default"].weight.copy_(m), ours.magnitude.copy_(m)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"use_rslora": True},
        {"use_dora": True},
        {"use_dora": True, "bias": False},
        {"use_dora": True, "use_rslora": True},
    ],
)
def test_forward_and_grads_match_peft(variant):
    ref, ours = _pair(**variant)
    _randomize(ref, ours)
    x = torch.randn(2, 5, IN)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y = ref(x1), ours(x2)
    assert (y - (ours.base_linear(x))).abs().max() > 1e-3  # the adapter contributes
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    y_ref.backward(g), y.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.lora_a.weight.grad, ref.lora_A["default"].weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.lora_b.weight.grad, ref.lora_B["default"].weight.grad, atol=1e-5, rtol=1e-5)
    if ours.use_dora:
        torch.testing.assert_close(
            ours.magnitude.grad, ref.lora_magnitude_vector["default"].weight.grad, atol=1e-5, rtol=1e-5
        )
    assert ours.weight.grad is None


@pytest.mark.parametrize("use_dora", [False, True])
def test_dropout_in_training_matches_peft(use_dora):
    ref, ours = _pair(use_dora=use_dora, dropout=0.3)
    _randomize(ref, ours)
    ref.train(), ours.train()
    x = torch.randn(3, IN)
    torch.manual_seed(7)
    y_ref = ref(x)
    torch.manual_seed(7)
    y = ours(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_dora", [False, True])
def test_merged_weight_matches_peft_merge(use_dora):
    ref, ours = _pair(use_dora=use_dora)
    _randomize(ref, ours)
    x = torch.randn(4, IN)
    y = ours(x)
    ref.merge()
    torch.testing.assert_close(ours.merged_weight(), ref.get_base_layer().weight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.nn.functional.linear(x, ours.merged_weight(), ours.bias), y, atol=1e-5, rtol=1e-5)


def test_default_init_is_identity_with_kaiming_a():
    _, ours = _pair(use_dora=True)
    x = torch.randn(4, IN)
    torch.testing.assert_close(ours(x), ours.base_linear(x))
    assert torch.count_nonzero(ours.lora_b.weight) == 0
    bound = 1 / math.sqrt(IN)  # kaiming_uniform(a=sqrt(5)) on fan_in = IN
    assert ours.lora_a.weight.abs().max() <= bound and ours.lora_a.weight.abs().max() > 0.5 * bound
    torch.testing.assert_close(ours.magnitude, ours.weight.norm(dim=1))


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4"])
def test_pissa_init_matches_peft(init):
    ref, ours = _pair(init=init)
    if init == "pissa":
        torch.testing.assert_close(ours.lora_a.weight, ref.lora_A["default"].weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.lora_b.weight, ref.lora_B["default"].weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.weight, ref.get_base_layer().weight, atol=1e-5, rtol=1e-5)
    # residual + s * B0 A0 = original weight (both randomised SVD and exact)
    torch.manual_seed(0)
    original = nn.Linear(IN, OUT).weight
    torch.testing.assert_close(ours.merged_weight(), original, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.pissa_init_a, ours.lora_a.weight)


def test_bad_arguments_raise_tuner_error():
    with pytest.raises(TunerError, match="init_lora_weights"):
        LoRALinear(IN, OUT, R, ALPHA, init_lora_weights="olora")
    with pytest.raises(TunerError, match="lora_rank"):
        LoRALinear(IN, OUT, 0, ALPHA)
    with pytest.raises(TunerError, match="lora_dropout"):
        LoRALinear(IN, OUT, R, ALPHA, dropout=1.5)
    with pytest.raises(TunerError, match="shape"):
        LoRALinear(IN, OUT, R, ALPHA, weight=torch.zeros(IN, OUT))


# ----------------------------------------------------------------------- a toy model with the zoo's names
class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Module()
        self.attn.q_proj, self.attn.v_proj = nn.Linear(IN, IN, bias=False), nn.Linear(IN, OUT, bias=False)
        self.mlp = nn.Module()
        self.mlp.w1 = nn.Linear(OUT, 40, bias=False)

    def forward(self, x):
        return self.mlp.w1(self.attn.v_proj(torch.tanh(self.attn.q_proj(x))))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block()])
        self.mix = nn.Linear(40, IN, bias=False)
        self.output = nn.Linear(IN, 10, bias=False)

    def forward(self, x):
        for layer in self.layers:
            x = self.mix(layer(x))
        return self.output(x)


def test_vera_matches_peft_vera_model():
    torch.manual_seed(0)
    toy = Toy()
    ref = get_peft_model(
        copy.deepcopy(toy), VeraConfig(r=R, target_modules=["q_proj", "v_proj", "w1"], projection_prng_key=3)
    )
    ours = apply_lora(
        toy, ["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=R, use_vera=True, projection_prng_key=3
    )
    torch.testing.assert_close(ours.vera_projections.vera_A, ref.base_model.vera_A["default"])
    torch.testing.assert_close(ours.vera_projections.vera_B, ref.base_model.vera_B["default"])
    with torch.no_grad():
        for name, p in get_adapter_params(ours).items():
            v = torch.randn_like(p)
            p.copy_(v)
            ref_name = "base_model.model." + name + ".default"
            dict(ref.named_parameters())[ref_name].copy_(v)
    x = torch.randn(3, IN)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    disable_adapters(ours)
    base_out = ours(x)
    disable_adapters(ours, False)
    assert (ours(x) - base_out).abs().max() > 1e-3  # the adapter contributes
    merged_ref = ref.merge_and_unload()
    from tuner.peft import merge_lora_weights

    merged = merge_lora_weights(ours)
    assert not hasattr(merged, "vera_projections")
    torch.testing.assert_close(merged(x), merged_ref(x), atol=1e-5, rtol=1e-5)


def test_apply_lora_validation_and_trainable_params():
    toy = Toy()
    with pytest.raises(TunerError, match="unknown lora_attn_modules.*choose from"):
        apply_lora(Toy(), ["q_proj", "query"])
    with pytest.raises(TunerError, match="did you mean 'use_rslora'"):
        apply_lora(Toy(), ["q_proj"], use_rslor=True)
    with pytest.raises(TunerError, match="must be a list"):
        apply_lora(Toy(), "q_proj")
    with pytest.raises(TunerError, match="no layer"):
        apply_lora(Toy(), [])
    with pytest.raises(TunerError, match=r"no layers named \['k_proj'\]"):
        apply_lora(Toy(), ["k_proj"])
    tied = Toy()
    tied.tok_embeddings = nn.Embedding(10, IN)
    tied.output.weight = tied.tok_embeddings.weight
    with pytest.raises(TunerError, match="tied"):
        apply_lora(tied, ["q_proj"], apply_lora_to_output=True)
    apply_lora(toy, ["q_proj", "v_proj"], apply_lora_to_output=True, lora_fa=True)
    with pytest.raises(TunerError, match="already"):
        apply_lora(toy, ["q_proj"])
    params = get_adapter_params(toy)
    expected = [f"layers.{i}.attn.{m}.lora_{ab}.weight" for i in range(2) for m in ("q_proj", "v_proj") for ab in "ab"]
    assert sorted(params) == sorted(expected + ["output.lora_a.weight", "output.lora_b.weight"])
    set_trainable_params(toy, params)
    trainable = {n for n, p in toy.named_parameters() if p.requires_grad}
    # LoRA-FA: A stays frozen, only B trains
    assert trainable == {n for n in params if "lora_b" in n}
    with pytest.raises(TunerError, match="does not have"):
        set_trainable_params(toy, ["nope.weight"])


def test_lora_plus_param_groups():
    toy = apply_lora(Toy(), ["q_proj", "v_proj"], use_dora=True)
    set_trainable_params(toy, get_adapter_params(toy))
    groups = lora_plus_param_groups(toy, lr=1e-3, lora_plus_ratio=16, weight_decay=0.01)
    by_id = {id(p): g for g in groups for p in g["params"]}
    named = dict(toy.named_parameters())
    for name, p in named.items():
        if not p.requires_grad:
            assert id(p) not in by_id
        elif "lora_b" in name or "magnitude" in name:
            assert by_id[id(p)]["lr"] == pytest.approx(16e-3)
        else:
            assert "lora_a" in name and by_id[id(p)]["lr"] == pytest.approx(1e-3)
    torch.optim.AdamW(groups)  # a valid optimizer spec
    # same grouping as PEFT's create_loraplus_optimizer on the same adapters
    from peft.optimizers import create_loraplus_optimizer

    ref = get_peft_model(Toy(), LoraConfig(r=R, target_modules=["q_proj", "v_proj"], use_dora=True))
    opt = create_loraplus_optimizer(ref, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16)
    ref_counts = sorted((g["lr"], len(g["params"])) for g in opt.param_groups if g["params"])
    assert ref_counts == sorted((g["lr"], len(g["params"])) for g in groups)
    with pytest.raises(TunerError, match="lora_plus_ratio"):
        lora_plus_param_groups(toy, 1e-3, 0)


class _RecordOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Records (op name, output shape) of every aten op run under it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.ops.append((func.overloadpacket.__name__, tuple(out.shape)))
        return out


@pytest.mark.parametrize("use_dora", [False, True])
def test_backward_scales_on_the_rank_side(use_dora):
    """The LoRA scaling multiplies the [tokens, r] product, so backward never makes a scaled copy of
    the [tokens, out] output gradient (one full extra pass per adapted layer, ~4% of a LoRA 1B step)."""
    _, ours = _pair(use_dora=use_dora)
    x = torch.randn(3, 5, IN, requires_grad=True)
    out = ours(x)
    grad = torch.randn_like(out)
    with _RecordOps() as rec:
        out.backward(grad)
    scaled_grads = [
        (op, shape) for op, shape in rec.ops if op in ("mul", "div") and shape[-1] == OUT and len(shape) > 1
    ]
    if not use_dora:  # DoRA rescales [tokens, out] rows by magnitude / norm: a mul it needs
        assert scaled_grads == [], scaled_grads
    assert any(shape[-1] == R for op, shape in rec.ops if op == "mul")  # the scaling is applied, at rank r
