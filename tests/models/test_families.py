"""The family registry: every name a config may use resolves, lookups agree, and each family's
spec is consistent with itself (its sizes survive writing and reading an HF config.json)."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from tuner.checkpoint.hf_config import build_model_from_hf_config, hf_config_from_model
from tuner.config import resolve_component
from tuner.errors import ConfigError
from tuner.models.families import families, family, model_types, normalize_model_type
from tuner.models.spec import REQUIRED_DIMS, FamilySpec, Size


def _sizes():
    return [(f.name, s.name) for f in families() for s in f.sizes]


def test_lookups():
    assert [normalize_model_type(n) for n in ("llama3_1", "LLAMA3_3", "qwen2_5", "PHI3", "qwen3")] == [
        "LLAMA3",
        "LLAMA3",
        "QWEN2",
        "PHI3_MINI",
        "QWEN3",
    ]
    assert family("LLAMA3").name == "llama3" and family("LLAMA3_1").name == "llama3_1"  # model type -> its namesake
    assert family("QWEN2").name == "qwen2_5"
    assert sorted(model_types()) == [
        "GEMMA2",
        "LLAMA2",
        "LLAMA3",
        "LLAMA3_2",
        "MISTRAL",
        "PHI3_MINI",
        "QWEN2",
        "QWEN3",
        "SMOLLM2",
    ]
    with pytest.raises(ConfigError, match="did you mean 'QWEN3'"):
        family("QWEN_3")
    with pytest.raises(ConfigError, match="model_type is not set"):
        family("")


@pytest.mark.parametrize("spec", families(), ids=lambda f: f.name)
def test_spec_names_resolve(spec):
    module = importlib.import_module(spec.module)
    for name, builder in spec.builders.items():
        assert getattr(module, name) is builder
    component = resolve_component(spec.component_path)
    assert list(inspect.signature(component).parameters) == list(spec.arguments)
    assert callable(resolve_component(spec.tokenizer))
    assert spec.model_type == spec.model_type.upper() and all(a == a.upper() for a in spec.aliases)


@pytest.mark.parametrize("family_name, size", _sizes())
def test_size_survives_an_hf_config_round_trip(family_name, size):
    spec = family(family_name)
    with torch.device("meta"):
        model = spec.builders[f"{spec.name}_{size}"]()
        again = build_model_from_hf_config(hf_config_from_model(model, spec.model_type), spec.model_type)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    for a, b in zip(again.layers, model.layers):
        assert (a.attn.sliding_window, a.attn.softcap, a.attn.scale) == (
            b.attn.sliding_window,
            b.attn.softcap,
            b.attn.scale,
        )
    assert (again.rope.base, again.rope.scaling, again.max_seq_len, again.norm.eps, again.final_softcap) == (
        model.rope.base,
        model.rope.scaling,
        model.max_seq_len,
        model.norm.eps,
        model.final_softcap,
    )


def test_size_table_rows_become_sizes():
    sizes = Size.table(
        ("name", "title", "num_layers", "params", "hf_repo", "shards"),
        ("1b", "One B", 16, 1_000, "org/one", 2),
        ("3b", "Three B", 28, None, "org/three", 1),
        vocab_size=128,
    )
    assert [(s.name, s.title, dict(s.dims), s.params, s.hf_repo, s.shards) for s in sizes] == [
        ("1b", "One B", {"vocab_size": 128, "num_layers": 16}, 1_000, "org/one", 2),
        ("3b", "Three B", {"vocab_size": 128, "num_layers": 28}, None, "org/three", 1),
    ]
    with pytest.raises(TypeError, match="has 2 cells for 3 columns"):
        Size.table(("name", "title", "num_layers"), ("1b", "One B"))


def test_spec_defaults_and_variant():
    """What a family need not say: model_type is its name in capitals, the HF architecture transformers'
    <Model>ForCausalLM, the required arguments most torchtune builders'; a variant keeps the rest and
    gets its own module."""
    spec = FamilySpec(name="tiny_x", title="Tiny", hf_model_type="qwen2", defaults={})
    assert (spec.model_type, spec.hf_architecture, spec.required, spec.module) == (
        "TINY_X",
        "Qwen2ForCausalLM",
        REQUIRED_DIMS,
        "tuner.models.tiny_x",
    )
    other = spec.variant(name="tiny_y", title="Tiny Y", hf_architecture="Qwen2Model")
    assert (other.module, other.model_type, other.hf_architecture) == ("tuner.models.tiny_y", "TINY_X", "Qwen2Model")
