"""Key conversion details: adapters, errors, Phi-3 fusing, Meta's rotary layout, HF configs."""

from __future__ import annotations

import pytest
import torch

from tests.models.hf_tiny import tiny_hf_model
from tuner.checkpoint.hf_config import build_model_from_hf_config, builder_kwargs_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner, tuner_module_path_to_hf, tuner_to_hf
from tuner.checkpoint.meta_keys import meta_to_tuner, tuner_to_meta
from tuner.errors import ConfigError, TunerError
from tuner.models.families import model_types
from tuner.models.rope import RotaryPositionalEmbeddings, apply_rope


def test_adapter_keys_map_with_module_renaming():
    sd = {
        "layers.0.attn.q_proj.lora_a.weight": torch.zeros(2, 8),
        "layers.0.attn.q_proj.lora_b.weight": torch.zeros(8, 2),
        "layers.0.attn.q_proj.magnitude": torch.zeros(8),
        "layers.3.mlp.w2.lora_a.weight": torch.zeros(2, 8),
        "output.lora_b.weight": torch.zeros(8, 2),
    }
    hf = tuner_to_hf(sd, "llama3", {})
    assert set(hf) == {
        "model.layers.0.self_attn.q_proj.lora_a.weight",
        "model.layers.0.self_attn.q_proj.lora_b.weight",
        "model.layers.0.self_attn.q_proj.magnitude",
        "model.layers.3.mlp.down_proj.lora_a.weight",
        "lm_head.lora_b.weight",
    }
    assert set(hf_to_tuner(hf, "LLAMA3", {})) == set(sd)


def test_norm_scale_is_hf_weight_and_gemma2_norm_names():
    sd = {
        "layers.1.sa_norm.scale": torch.ones(4),
        "layers.1.sa_scale.scale": torch.ones(4),
        "layers.1.mlp_norm.scale": torch.ones(4),
        "layers.1.mlp_scale.scale": torch.ones(4),
        "norm.scale": torch.ones(4),
    }
    assert set(tuner_to_hf(sd, "gemma2", {})) == {
        "model.layers.1.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.layers.1.pre_feedforward_layernorm.weight",
        "model.layers.1.post_feedforward_layernorm.weight",
        "model.norm.weight",
    }


def test_module_paths():
    assert tuner_module_path_to_hf("layers.0.attn.q_proj", "llama3_2") == "model.layers.0.self_attn.q_proj"
    assert tuner_module_path_to_hf("layers.2.attn.output_proj", "qwen2") == "model.layers.2.self_attn.o_proj"
    assert tuner_module_path_to_hf("layers.2.mlp.w3", "smollm2") == "model.layers.2.mlp.up_proj"
    assert tuner_module_path_to_hf("output", "llama2") == "lm_head"
    assert tuner_module_path_to_hf("layers.0.attn.output_proj", "phi3_mini") == "model.layers.0.self_attn.o_proj"
    with pytest.raises(TunerError, match="qkv_proj"):
        tuner_module_path_to_hf("layers.0.attn.q_proj", "PHI3_MINI")
    with pytest.raises(TunerError, match="module path"):
        tuner_module_path_to_hf("layers.0.attn.q_proj.weight", "LLAMA3")


def test_unknown_model_type_lists_valid_ones():
    with pytest.raises(TunerError) as e:
        hf_to_tuner({}, "llama9", {})
    for mt in model_types():
        assert mt in str(e.value)


@pytest.mark.parametrize(
    "family, name",
    [
        ("llama3_1", "LLAMA3_1"),
        ("llama3_1", "llama3_3"),
        ("qwen2_5", "QWEN2_5"),
        ("phi3", "PHI3"),
        ("smollm2", "smollm2"),
        ("qwen3", "Qwen3"),
    ],
)
def test_conversions_accept_every_name_the_checkpointer_accepts(family, name):
    hf, cfg, _ = tiny_hf_model(family)
    model = build_model_from_hf_config(cfg, name)
    model.load_state_dict(hf_to_tuner(hf.state_dict(), name, cfg))
    assert set(tuner_to_hf(model.state_dict(), name, cfg)) == set(hf.state_dict()) - (
        {"lm_head.weight"} if cfg.get("tie_word_embeddings") else set()
    )


def test_unexpected_keys_raise():
    with pytest.raises(TunerError, match="vision_tower"):
        hf_to_tuner({"model.vision_tower.weight": torch.zeros(1)}, "LLAMA3", {})
    with pytest.raises(TunerError, match="layers.0.foo"):
        tuner_to_hf({"layers.0.foo.weight": torch.zeros(1)}, "LLAMA3", {})


def test_tied_lm_head_is_dropped_on_load():
    hf, cfg, mt = tiny_hf_model("smollm2")
    sd = hf_to_tuner(hf.state_dict(), mt, cfg)
    assert "output.weight" not in sd and "tok_embeddings.weight" in sd


def test_phi3_split_and_fuse_roundtrip_and_adapters_refused():
    hf, cfg, mt = tiny_hf_model("phi3")
    hf_sd = hf.state_dict()
    sd = hf_to_tuner(hf_sd, mt, cfg)
    assert "layers.0.attn.k_proj.weight" in sd and "layers.0.mlp.w3.weight" in sd
    back = tuner_to_hf(sd, mt, cfg)
    assert set(back) == set(hf_sd)
    for k in back:
        assert torch.equal(back[k], hf_sd[k]), k
    with pytest.raises(TunerError, match="qkv_proj"):
        tuner_to_hf({"layers.0.attn.q_proj.lora_a.weight": torch.zeros(2, 4)}, mt, cfg)
    with pytest.raises(TunerError, match="Phi-3"):
        hf_to_tuner({"model.layers.0.self_attn.qkv_proj.lora_A.weight": torch.zeros(2, 4)}, mt, cfg)


def _meta_rope(x: torch.Tensor, pos: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """Meta's interleaved (complex) rotary embedding, as in the original llama code. x: [s, h, d]."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.polar(torch.ones(len(pos), head_dim // 2), torch.outer(pos.float(), inv))
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs[:, None]).flatten(-2)


def test_meta_layout_gives_same_attention_scores_and_roundtrips():
    torch.manual_seed(0)
    heads, kv, dim, hd = 4, 2, 32, 8
    sd = {
        "layers.0.attn.q_proj.weight": torch.randn(heads * hd, dim),
        "layers.0.attn.k_proj.weight": torch.randn(kv * hd, dim),
        "layers.0.attn.k_proj.lora_b.weight": torch.randn(kv * hd, 3),
        "layers.0.attn.k_proj.lora_a.weight": torch.randn(3, dim),
        "layers.0.attn.v_proj.weight": torch.randn(kv * hd, dim),
        "layers.0.sa_norm.scale": torch.randn(dim),
        "tok_embeddings.weight": torch.randn(10, dim),
    }
    meta = tuner_to_meta(sd, heads, kv, dim)
    assert "layers.0.attention.wq.weight" in meta and "layers.0.attention_norm.weight" in meta
    assert torch.equal(meta["layers.0.attention.wk.lora_a.weight"], sd["layers.0.attn.k_proj.lora_a.weight"])
    back = meta_to_tuner(meta, heads, kv, dim)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)

    x = torch.randn(6, dim)
    pos = torch.arange(6)
    rope = RotaryPositionalEmbeddings(hd, 16, 10_000.0)
    cos, sin = rope(6)
    ours_q = apply_rope((x @ sd["layers.0.attn.q_proj.weight"].T).view(1, 6, heads, hd).transpose(1, 2), cos, sin)
    ours_k = apply_rope((x @ sd["layers.0.attn.k_proj.weight"].T).view(1, 6, kv, hd).transpose(1, 2), cos, sin)
    meta_q = _meta_rope((x @ meta["layers.0.attention.wq.weight"].T).view(6, heads, hd), pos, hd, 10_000.0)
    meta_k = _meta_rope((x @ meta["layers.0.attention.wk.weight"].T).view(6, kv, hd), pos, hd, 10_000.0)
    ours = ours_q[0] @ ours_k[0].repeat_interleave(2, 0).transpose(1, 2)
    ref = meta_q.transpose(0, 1) @ meta_k.transpose(0, 1).repeat_interleave(2, 0).transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_builder_kwargs_from_released_style_config():
    cfg = {
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "rope_scaling": {
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    }
    kw = builder_kwargs_from_hf_config(cfg, "llama3_2")
    assert kw["_component_"] == "tuner.models.llama3_2.llama3_2"
    assert kw["scale_factor"] == 32.0 and kw["tie_word_embeddings"] is True and kw["rope_base"] == 500000.0
    assert (
        builder_kwargs_from_hf_config({**cfg, "rope_scaling": None}, "LLAMA3")["_component_"]
        == "tuner.models.llama3.llama3"
    )


@pytest.mark.parametrize(
    "change, match",
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_unsupported_hf_configs_raise(change, match):
    _, cfg, _ = tiny_hf_model("llama3")
    cfg = {**cfg, **change}
    cfg.pop("rope_parameters", None) if "rope_scaling" in change else None
    with pytest.raises(ConfigError, match=match):
        build_model_from_hf_config(cfg, "LLAMA3")


def test_missing_config_key_raises():
    with pytest.raises(ConfigError, match="num_attention_heads"):
        builder_kwargs_from_hf_config({"vocab_size": 3}, "LLAMA2")


def test_wrapper_names_are_dropped_from_tuner_keys():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    from tuner.models.llama3_2 import llama3_2

    model = llama3_2(
        vocab_size=16, num_layers=2, num_heads=2, num_kv_heads=1, embed_dim=8, max_seq_len=8, intermediate_dim=12
    )
    plain = model.state_dict()
    for i, layer in enumerate(model.layers):
        model.layers[i] = checkpoint_wrapper(layer)
    wrapped = dict(model.named_parameters())  # state_dict() strips the names by itself; named_parameters not
    assert any("_checkpoint_wrapped_module" in k for k in wrapped)
    assert set(tuner_to_hf(wrapped, "LLAMA3_2", {"tie_word_embeddings": True})) == set(
        tuner_to_hf(plain, "LLAMA3_2", {"tie_word_embeddings": True})
    )
    assert set(tuner_to_meta(wrapped, 2, 1, 8)) == set(tuner_to_meta(plain, 2, 1, 8))
