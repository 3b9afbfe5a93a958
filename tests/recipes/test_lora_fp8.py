"""LoRA over an FP8 base (``model.base_dtype: fp8``) end to end on CPU (FP8 GEMMs emulated): the base
is stored in FP8 and never changes (k_proj, not adapted, too), the adapters train with activation
checkpointing, the adapter loads in PEFT on the original base, the logits are those of HF transformers
+ PEFT with torchao's rowwise FP8 arithmetic in every block linear (tightly), and the merged model is
the original weights plus the adapter (not the FP8-rounded ones); with ``fp8_output`` the loss's logits
GEMM runs on an FP8 copy of the output weight and no key changes. QLoRA with ``base_dtype`` keeps plain
QLoRA's NF4 base and saves a plain QLoRA adapter. A refused combination is one clear error. DoRA over
an FP8 base is checked at the layer (tests/quantization/test_fp8.py; over NF4 computing in FP8:
tests/quantization/test_nf4_fp8.py), FSDP2 in tests/recipes/test_distributed.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.recipes.helpers import make_hf_checkpoint, write_config
from tests.recipes.test_lora_finetune import LORA, _peft_logits, _train
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.quantization import FP8Weight, dequantize_fp8, get_fp8_weight, has_fp8_weight

FP8_LORA = {**LORA, "base_dtype": "fp8"}
ADAMW = {"_component_": "torch.optim.AdamW", "lr": 1e-2}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf_tiny_fp8"), initializer_range=0.2)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _torchao_fp8_linear(linear: torch.nn.Linear):
    """A forward for an HF block linear that is the FP8 GEMM written out from torchao's rowwise
    quantization (x and W each e4m3 with one scale per row), in float64: independent of tuner's code."""
    from torchao.float8.config import ScalingGranularity
    from torchao.float8.float8_utils import tensor_to_scale, to_fp8_saturated

    def rows(t: torch.Tensor) -> torch.Tensor:
        e4m3 = torch.float8_e4m3fn
        scale = tensor_to_scale(t, e4m3, scaling_granularity=ScalingGranularity.AXISWISE, axiswise_dim=-1)
        return to_fp8_saturated(t.float() * scale, e4m3).double() / scale.double()

    w = rows(linear.weight.detach())

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = rows(x.reshape(-1, x.shape[-1])) @ w.t()
        return y.view(*x.shape[:-1], -1).to(x.dtype)

    return forward


def _fp8_reference_logits(ckpt: Path, adapter_dir: Path, tokens: torch.Tensor) -> torch.Tensor:
    """HF transformers' model of the original checkpoint with the adapter loaded by PEFT, every linear
    of its blocks (PEFT's base layers and the plain k_proj) computing `_torchao_fp8_linear`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir)
    patched = 0
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and ".layers." in name and "lora_" not in name:
            module.forward, patched = _torchao_fp8_linear(module), patched + 1
    assert patched == 2 * 7  # q, k, v, o and the three MLP weights of both layers
    model.eval()
    with torch.no_grad():
        return model(tokens).logits


# The FP8 model against the reference above: the same arithmetic but for float32 sums in another
# order and another model implementation; measured 3.9e-7. Leaving out the activations' quantization
# alone moves the logits by ~10%, so this is what pins the numerics down.
FP8_REFERENCE_TOLERANCE = 1e-4
# ... and against the exported (unquantized) model, loosely, as a sanity bound: this random tiny model
# (weights of std 0.2) amplifies rounding from layer to layer, so FP8 rounding (2^-4 per value) moves
# its logits by 18% (measured, all seven block linears in FP8); a wrong scale layout moves them ~100%.
FP8_LOGIT_CHANGE = 0.25


def test_fp8_base_trains_and_merges_into_the_original_weights(ckpt, tmp_path):
    from transformers import AutoModelForCausalLM

    # with fp8_output: the loss's logits GEMM in FP8 on a copy of the tied embedding, made after the load
    lora = {**FP8_LORA, "fp8_output": True}
    trainer, before = _train(
        tmp_path, ckpt, lora, max_steps_per_epoch=3, enable_activation_checkpointing=True, optimizer=ADAMW
    )
    decoder = trainer.decoder
    assert isinstance(decoder.frozen_output_weight(), FP8Weight)  # what the loss multiplied by
    fp8_layers = {
        n.replace("_checkpoint_wrapped_module.", ""): m for n, m in decoder.named_modules() if has_fp8_weight(m)
    }
    assert len(fp8_layers) == 2 * 7  # adapted: q, v, output_proj, the MLP; frozen: k_proj (FP8Linear)
    after = decoder.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(".lora_" in k for k in changed), sorted(changed)[:5]

    hf_config = json.loads((ckpt / "config.json").read_text())
    original = hf_to_tuner(load_file(ckpt / "model.safetensors"), "SMOLLM2", hf_config)
    step = tmp_path / "out" / "step_3"
    merged = hf_to_tuner(load_file(step / "model.safetensors"), "SMOLLM2", hf_config)
    scaling = LORA["lora_alpha"] / LORA["lora_rank"]
    for name, layer in fp8_layers.items():
        if not hasattr(layer, "lora_b"):  # k_proj: frozen, merged unchanged from the original
            assert torch.equal(merged[name + ".weight"], original[name + ".weight"])
            continue
        delta = scaling * layer.lora_b.weight.detach() @ layer.lora_a.weight.detach()
        torch.testing.assert_close(merged[name + ".weight"], original[name + ".weight"] + delta, rtol=0, atol=1e-6)
        into_fp8 = dequantize_fp8(get_fp8_weight(layer)) + delta  # what merging into the FP8 base would give
        assert (merged[name + ".weight"] - into_fp8).abs().max() > 1e-3

    tokens = torch.randint(0, 49152, (2, 11))
    decoder.eval()
    with torch.no_grad():
        ours = decoder(tokens)
        exported = AutoModelForCausalLM.from_pretrained(step, torch_dtype=torch.float32)(tokens).logits
    peft = _peft_logits(ckpt, step / "adapter", tokens)  # the adapter on the original (unquantized) base
    torch.testing.assert_close(peft, exported, rtol=0, atol=1e-4)
    ref = _fp8_reference_logits(ckpt, step / "adapter", tokens)
    assert _relative(ours, ref) < FP8_REFERENCE_TOLERANCE
    assert _relative(ours, exported) < FP8_LOGIT_CHANGE  # what it exports, up to FP8 rounding


def test_qlora_computing_in_fp8_keeps_the_nf4_base_and_saves_a_plain_qlora_adapter(ckpt, tmp_path):
    from tests.recipes.helpers import logged_losses
    from tuner.quantization import has_nf4_weight, nf4_computes_in_fp8

    runs = {}
    for name, lora in (("qlora", {**LORA, "quantize_base": True}), ("fp8", {**FP8_LORA, "quantize_base": True})):
        (tmp_path / name).mkdir()
        if name == "fp8":  # and the loss's logits GEMM in FP8, on a copy of the (dense) tied embedding
            lora = {**lora, "fp8_output": True}
        common = dict(max_steps_per_epoch=2, enable_activation_checkpointing=True, optimizer=ADAMW)
        runs[name] = _train(tmp_path / name, ckpt, lora, nf4_keep_dense_for_backward=True, **common)
    (_, plain_before), (ours, before) = runs["qlora"], runs["fp8"]
    assert isinstance(ours.decoder.frozen_output_weight(), FP8Weight)
    nf4 = [m for m in ours.decoder.modules() if has_nf4_weight(m)]
    assert len(nf4) == 2 * 6 and all(nf4_computes_in_fp8(m) for m in nf4)  # q, v, output_proj, the MLP
    assert not any(has_fp8_weight(m) for m in ours.decoder.modules())  # nothing stored in FP8
    # the same base, byte for byte, as plain QLoRA's: same keys, dtypes and NF4 payload, and it never changes
    assert before.keys() == plain_before.keys()
    for key, value in before.items():
        if ".lora_" not in key:
            assert value.dtype == plain_before[key].dtype and torch.equal(value, plain_before[key]), key
    after = ours.decoder.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(".lora_" in k for k in changed), sorted(changed)[:5]
    losses = logged_losses(tmp_path / "fp8" / "out")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    plain_losses = logged_losses(tmp_path / "qlora" / "out")  # FP8 GEMMs: not QLoRA's numbers, but close
    assert losses != plain_losses and all(abs(losses[s] / plain_losses[s] - 1) < 0.05 for s in losses)
    # the saved adapter has a plain QLoRA adapter's format: the same files, config, keys, shapes and dtypes
    folders = {name: tmp_path / name / "out" / "step_2" for name in runs}
    assert sorted(p.name for p in folders["fp8"].iterdir()) == sorted(p.name for p in folders["qlora"].iterdir())
    adapters = {name: folder / "adapter" for name, folder in folders.items()}
    assert sorted(p.name for p in adapters["fp8"].iterdir()) == sorted(p.name for p in adapters["qlora"].iterdir())
    configs = {name: json.loads((a / "adapter_config.json").read_text()) for name, a in adapters.items()}
    assert configs["fp8"] == configs["qlora"]
    weights = {name: load_file(a / "adapter_model.safetensors") for name, a in adapters.items()}
    assert {k: (v.shape, v.dtype) for k, v in weights["fp8"].items()} == {
        k: (v.shape, v.dtype) for k, v in weights["qlora"].items()
    }


def test_fp8_output_without_an_fp8_base_is_one_clear_error(ckpt, tmp_path, capsys):
    from tests.cli.test_bad_inputs import assert_one_error
    from tuner.cli.main import main

    config = write_config(tmp_path / "run.yaml", ckpt, tmp_path / "out", lora={**LORA, "fp8_output": True})
    assert main(["run", "lora_finetune_single_device", "--config", str(config)]) == 2
    assert_one_error(capsys.readouterr().err, "fp8_output: True needs an FP8 base", "Fix: set model.base_dtype: fp8")
