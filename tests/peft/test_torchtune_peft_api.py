"""torchtune's ``modules`` API on tuner: its names are tuner's classes; DoRALinear, AdapterModule,
disable_adapter, LoRA key validation by settings, CEWithChunkedOutputLoss in both call styles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuner.modules as modules
from tuner.config import instantiate, resolve_component
from tuner.errors import ConfigError, TrainingError
from tuner.modules import loss, peft
from tuner.training.loss import ChunkedCrossEntropyLoss


def test_torchtune_names_are_tuners_classes():
    import tuner.models
    import tuner.peft as tuner_peft

    assert modules.RMSNorm is tuner.models.RMSNorm and modules.TransformerDecoder is tuner.models.TransformerDecoder
    assert peft.LoRALinear is tuner_peft.LoRALinear and peft.get_merged_lora_ckpt is tuner_peft.get_merged_lora_ckpt
    assert resolve_component("torchtune.modules.loss.CEWithChunkedOutputLoss") is loss.CEWithChunkedOutputLoss
    with pytest.raises(ConfigError, match="QATLoRALinear is not supported by tuner: quantization-aware training"):
        peft.QATLoRALinear(4, 4, 2, 1.0)


def test_dora_linear_and_quantization_arguments():
    torch.manual_seed(0)
    dora = peft.DoRALinear(in_dim=8, out_dim=4, rank=2, alpha=4.0)
    assert dora.use_dora and dora.adapter_params() == ["magnitude", "lora_a.weight", "lora_b.weight"]
    torch.testing.assert_close(dora.magnitude, torch.linalg.norm(dora.weight, dim=1))
    with pytest.raises(
        ConfigError, match="``quantize_base`` is False, but received the following quantization arguments"
    ):
        peft.LoRALinear(8, 4, 2, 1.0, block_size=64)
    with pytest.raises(ConfigError, match="uses block_size=64 and scaler_block_size=256"):
        peft.LoRALinear(8, 4, 2, 1.0, quantize_base=True, block_size=8)
    with torch.device("meta"):
        on_meta = peft.DoRALinear(8, 4, 2, 1.0)
    with pytest.raises(TrainingError, match="Cannot initialize DoRA magnitude"):
        on_meta.initialize_dora_magnitude()


class _OwnAdapter(nn.Module):
    """A user's adapter module: torchtune's AdapterModule protocol (adapter_params + disabled)."""

    def __init__(self):
        super().__init__()
        self.base, self.lora = nn.Linear(2, 2), nn.Linear(2, 2, bias=False)
        self.disabled = False

    def adapter_params(self):
        return ["lora.weight"]

    def forward(self, x):
        return self.base(x) + (0 if self.disabled else self.lora(x))


def test_adapter_protocol_disable_adapter_and_trainable_params():
    model = nn.Sequential(_OwnAdapter(), peft.LoRALinear(2, 2, 1, 1.0, init_lora_weights=False))
    params = peft.get_adapter_params(model)
    assert set(params) == {"0.lora.weight", "1.lora_a.weight", "1.lora_b.weight"}
    peft.set_trainable_params(model, params)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(params)
    x = torch.randn(3, 2)
    with peft.disable_adapter(model):
        assert model[0].disabled and model[1].disabled
        base = model[1].base_linear(model[0].base(x))
        torch.testing.assert_close(model(x), base)
    assert not model[0].disabled and not torch.allclose(model(x), base)
    sd = peft.get_adapter_state_dict(model.state_dict())
    assert set(sd) == {"0.lora.weight", "1.lora_a.weight", "1.lora_b.weight"}


def test_lora_key_validation_follows_the_settings():
    check = peft.validate_missing_and_unexpected_for_lora
    check(
        ["q_proj"],
        False,
        False,
        base_missing=["layers.0.attn.q_proj.lora_a.weight"],
        lora_missing=["layers.0.attn.q_proj.weight"],
    )
    with pytest.raises(AssertionError, match="Missing non-LoRA key layers.0.attn.k_proj.lora_a.weight"):
        check(["q_proj"], False, False, base_missing=["layers.0.attn.k_proj.lora_a.weight"])  # k_proj has no LoRA here
    with pytest.raises(AssertionError, match="Missing LoRA key layers.0.mlp.w1.magnitude"):
        check(["q_proj"], True, False, lora_missing=["layers.0.mlp.w1.magnitude"])
    with pytest.raises(AssertionError, match="Unexpected key loading adapter"):
        check(["q_proj"], False, False, lora_unexpected=["x"])
    assert peft.get_lora_module_names(["q_proj"], True, True) == ["q_proj", "w1", "w2", "w3", "output"]


def test_ce_with_chunked_output_loss_takes_both_calls():
    torch.manual_seed(0)
    ce = instantiate({"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss", "num_output_chunks": 4})
    assert isinstance(ce, ChunkedCrossEntropyLoss)  # the trainer's memory-lean path applies
    logits, labels = torch.randn(2, 12, 10), torch.randint(0, 10, (2, 12))
    labels[0, :5] = -100
    expected = F.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(ce(list(logits.chunk(4, dim=1)), labels), expected)  # torchtune's call: labels aligned
    hidden, proj = torch.randn(2, 12, 6), nn.Linear(6, 10, bias=False)
    torch.testing.assert_close(
        ce(hidden, labels, proj), ChunkedCrossEntropyLoss(num_output_chunks=4)(hidden, labels, proj)
    )
    summed = loss.CEWithChunkedOutputLoss(num_output_chunks=4, reduction="sum")(list(logits.chunk(4, dim=1)), labels)
    torch.testing.assert_close(summed, expected * (labels != -100).sum())
