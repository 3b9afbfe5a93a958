"""Adding a Llama-shaped family is declaring its spec: once registered, model_type lookup, its
builders, HF conversion both ways, building from and writing an HF config.json, and the HF
checkpointer all work with no other edit. The family here lives in this test module."""

from __future__ import annotations

import pytest
import torch
import transformers
from hf_tiny import VOCAB, tiny_hf_model

from tuner.checkpoint import HFCheckpointer
from tuner.checkpoint.hf_config import build_model_from_hf_config, builder_kwargs_from_hf_config, hf_config_from_model
from tuner.checkpoint.hf_keys import hf_to_tuner, tuner_to_hf
from tuner.config import instantiate
from tuner.errors import ConfigError
from tuner.models.families import family, model_types, normalize_model_type, register, unregister
from tuner.models.spec import FamilySpec, Size

_DIMS = dict(
    vocab_size=VOCAB, num_layers=2, num_heads=4, num_kv_heads=4, embed_dim=64, intermediate_dim=96, max_seq_len=64
)
FAMILY = FamilySpec(
    name="tiny_llama_test",
    title="Tiny Llama (test)",
    aliases=("TLT",),
    hf_model_type="llama",
    defaults=dict(attn_dropout=0.0, norm_eps=1e-5, rope_base=10_000.0, tie_word_embeddings=False),
    sizes=(Size("2l", "Tiny Llama 2 layers", _DIMS),),
    module=__name__,
)
globals().update(FAMILY.builders)
TOKENS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def registered():
    register(FAMILY)
    yield FAMILY
    unregister(FAMILY.name)


def test_unregistered_family_is_unknown():
    with pytest.raises(ConfigError, match="unknown model_type 'TLT'"):
        family("TLT")


@torch.no_grad()
def test_a_spec_is_all_a_llama_shaped_family_needs(registered, tmp_path):
    assert family("tlt") is family("tiny_llama_test") is FAMILY and normalize_model_type("Tlt") == "TINY_LLAMA_TEST"
    assert "TINY_LLAMA_TEST" in model_types()
    builders = FAMILY.builders
    assert builders["tiny_llama_test_2l"]().layers[0].attn.num_heads == 4
    assert globals()["lora_tiny_llama_test_2l"] is builders["lora_tiny_llama_test_2l"]
    lora = builders["lora_tiny_llama_test_2l"](["q_proj", "v_proj"], lora_rank=2, lora_alpha=4)
    assert {n for n, p in lora.named_parameters() if p.requires_grad} >= {"layers.0.attn.q_proj.lora_a.weight"}

    hf, config, _ = tiny_hf_model("llama2")  # a LlamaForCausalLM checkpoint
    kwargs = builder_kwargs_from_hf_config(config, "TLT")
    assert kwargs["_component_"] == f"{__name__}.tiny_llama_test"
    model = instantiate(kwargs).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), "TLT", config))
    assert (model(TOKENS) - hf(TOKENS).logits).abs().max() <= 1e-4
    assert set(tuner_to_hf(model.state_dict(), "TLT", config)) == set(hf.state_dict())
    assert type(build_model_from_hf_config(config, "tlt")) is type(model)

    written = hf_config_from_model(model, "TLT")
    assert written["architectures"] == ["LlamaForCausalLM"] and written["model_type"] == "llama"
    hf2 = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**written)).eval()
    hf2.load_state_dict(tuner_to_hf(model.state_dict(), "TLT", config))
    assert (hf2(TOKENS).logits - hf(TOKENS).logits).abs().max() <= 1e-4

    hf.save_pretrained(tmp_path / "src")
    ckpt = HFCheckpointer(tmp_path / "src", None, "tlt", tmp_path / "out")
    assert ckpt.model_type == "TINY_LLAMA_TEST"
    loaded = instantiate(kwargs)
    loaded.load_state_dict(ckpt.load_checkpoint()["model"])
    saved = ckpt.save_checkpoint({"model": loaded.state_dict()}, step=1, epoch=0)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(saved).eval()
    assert (reloaded(TOKENS).logits - hf(TOKENS).logits).abs().max() <= 1e-4
