"""Decoder behaviour beyond HF parity: BlockMask path, KV cache steps, tied output, meta device,
LoRA builders, errors."""

from __future__ import annotations

import inspect

import pytest
import torch
from hf_tiny import VOCAB, tiny_hf_model
from torch.nn.attention.flex_attention import create_block_mask

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.errors import ConfigError, UsageError
from tuner.models import TiedLinear, TransformerDecoder

# torchtune's LoRA builder arguments, in its order (what apply_lora receives, by name)
LORA_ARGUMENTS = ("lora_attn_modules", "apply_lora_to_mlp", "apply_lora_to_output", "lora_rank", "lora_alpha")
LORA_ARGUMENTS += ("lora_dropout", "use_dora", "quantize_base")


def _model(family):
    hf, cfg, mt = tiny_hf_model(family)
    model = build_model_from_hf_config(cfg, mt).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), mt, cfg))
    return model


@pytest.mark.parametrize("family", ["gemma2"])  # GQA, and softcap + sliding window in score_mod
@torch.no_grad()
def test_block_mask_matches_dense_mask_for_packed_documents(family):
    model = _model(family)
    s = 24
    doc = torch.tensor([0] * 6 + [1] * 18)  # 2nd document is longer than the 8-token window

    def doc_causal(b, h, q, kv):
        return (q >= kv) & (doc[q] == doc[kv])

    block = create_block_mask(doc_causal, B=None, H=None, Q_LEN=s, KV_LEN=s, device="cpu")
    dense = ((torch.arange(s)[:, None] >= torch.arange(s)[None]) & (doc[:, None] == doc[None]))[None]
    pos = torch.cat([torch.arange(6), torch.arange(18)])[None]
    tokens = torch.randint(0, VOCAB, (1, s), generator=torch.Generator().manual_seed(0))
    a = model(tokens, mask=block, input_pos=pos)
    b = model(tokens, mask=dense, input_pos=pos)
    assert (a - b).abs().max().item() <= 1e-4
    # packing is the same as running the documents one by one
    second = model(tokens[:, 6:])
    assert (b[:, 6:] - second).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
@torch.no_grad()
def test_kv_cache_steps_match_full_forward(family):
    model = _model(family)
    tokens = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))
    full = model(tokens)
    model.setup_caches(2, torch.float32, 32)
    try:
        assert model.caches_are_enabled()
        first = model(tokens[:, :7], input_pos=torch.arange(7)[None].expand(2, -1))
        steps = [model(tokens[:, i : i + 1]) for i in range(7, 20)]  # positions continue by themselves
        out = torch.cat([first, *steps], dim=1)
        assert (out - full).abs().max().item() <= 1e-4
        model.reset_caches()
        again = model(tokens[:, :7])
        assert (again - full[:, :7]).abs().max().item() <= 1e-4
    finally:
        model.remove_caches()
    assert not model.caches_are_setup()


def test_tied_output_owns_no_parameter():
    model = _model("qwen2_5")
    assert isinstance(model.output, TiedLinear) and model.tie_word_embeddings
    assert model.output.weight is model.tok_embeddings.weight
    assert not any(k.startswith("output") for k in model.state_dict())
    assert not _model("llama3").tie_word_embeddings


def test_meta_device_build_then_materialise():
    from tuner.models.llama3_2 import llama3_2

    kwargs = dict(
        vocab_size=VOCAB, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=16, intermediate_dim=48
    )
    torch.manual_seed(0)
    ref = llama3_2(**kwargs)
    with torch.device("meta"):
        model = llama3_2(**kwargs)
    assert model.rope.cos.is_meta
    model.to_empty(device="cpu")
    model.rope_init()
    model.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, VOCAB, (1, 9))
    torch.testing.assert_close(model(tokens), ref(tokens))


def test_module_names_follow_torchtune():
    model = _model("llama3")
    names = dict(model.named_modules())
    for n in [
        "tok_embeddings",
        "layers.1.attn.q_proj",
        "layers.1.attn.k_proj",
        "layers.1.attn.v_proj",
        "layers.1.attn.output_proj",
        "layers.1.mlp.w1",
        "layers.1.mlp.w2",
        "layers.1.mlp.w3",
        "layers.1.sa_norm",
        "layers.1.mlp_norm",
        "norm",
        "output",
    ]:
        assert n in names, n
    assert isinstance(model.layers, torch.nn.ModuleList)


def test_errors():
    model = _model("llama3")
    with pytest.raises(UsageError, match="bool"):
        model(torch.zeros(1, 4, dtype=torch.long), mask=torch.ones(1, 4, 4))
    with pytest.raises(UsageError, match=r"expected \[batch, 4, 4\]"):
        model(torch.zeros(1, 4, dtype=torch.long), mask=torch.ones(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(UsageError, match="max_seq_len"):
        model.setup_caches(1, torch.float32, 1000)
    from tuner.models.llama3 import llama3

    with pytest.raises(ConfigError, match="num_kv_heads"):
        llama3(vocab_size=8, num_layers=1, num_heads=4, num_kv_heads=3, embed_dim=16, max_seq_len=8)
    with pytest.raises(ConfigError, match="rope scaling"):
        from tuner.models.rope import RotaryPositionalEmbeddings

        RotaryPositionalEmbeddings(8, 8, scaling={"rope_type": "yarn", "factor": 2.0})


def test_lora_builders_pass_arguments_to_apply_lora(monkeypatch):
    calls = []

    def fake_apply_lora(model, **kwargs):
        calls.append((model, kwargs))
        return model

    from tuner.models import _builder, llama3_2

    monkeypatch.setattr(_builder, "apply_lora", fake_apply_lora)

    dims = dict(
        vocab_size=VOCAB, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=16, intermediate_dim=48
    )
    model = llama3_2.qlora_llama3_2(["q_proj", "v_proj"], True, lora_rank=4, lora_alpha=8, use_rslora=True, **dims)
    assert isinstance(model, TransformerDecoder) and model.tok_embeddings.num_embeddings == VOCAB
    _, kw = calls[-1]
    assert kw == dict(zip(LORA_ARGUMENTS, (["q_proj", "v_proj"], True, False, 4, 8, 0.0, False, True)), use_rslora=True)
    with torch.device("meta"):
        llama3_2.lora_llama3_2_1b(["q_proj"], False, True, 16, 32.0, 0.1, True)
    assert calls[-1][1] == dict(zip(LORA_ARGUMENTS, (["q_proj"], False, True, 16, 32.0, 0.1, True, False)))
    with pytest.raises(TypeError, match="multiple values"):
        llama3_2.lora_llama3_2_1b(["q_proj"], True, apply_lora_to_mlp=True)
    sig = inspect.signature(llama3_2.lora_llama3_2)
    assert {"lora_attn_modules", "lora_rank", "vocab_size", "use_rslora", "use_vera"} <= set(sig.parameters)
    assert llama3_2.qlora_llama3_2_3b.__name__ == "qlora_llama3_2_3b"


@pytest.mark.parametrize(
    "module, names",
    [
        ("llama2", ["llama2_7b", "llama2_13b", "llama2_70b"]),
        ("llama3", ["llama3_8b", "llama3_70b"]),
        ("llama3_1", ["llama3_1_8b", "llama3_1_70b", "llama3_1_405b"]),
        ("llama3_2", ["llama3_2_1b", "llama3_2_3b"]),
        ("llama3_3", ["llama3_3_70b"]),
        ("mistral", ["mistral_7b", "mistral_7b_v0_3"]),
        (
            "qwen2_5",
            ["qwen2_5_0_5b", "qwen2_5_1_5b", "qwen2_5_3b", "qwen2_5_7b", "qwen2_5_14b", "qwen2_5_32b", "qwen2_5_72b"]
            + [f"qwen2_5_{s}_{k}" for s in ("1_5b", "7b", "14b", "32b", "72b") for k in ("base", "instruct")],
        ),
        ("qwen3", [f"qwen3_{s}_{k}" for s in ("0_6b", "1_7b", "4b", "8b") for k in ("base", "instruct")]),
        ("gemma2", ["gemma2_2b", "gemma2_9b", "gemma2_27b"]),
        ("phi3", ["phi3_mini"]),
        ("smollm2", ["smollm2_135m", "smollm2_360m", "smollm2_1_7b"]),
    ],
)
def test_every_family_exports_builders(module, names):
    import importlib

    mod = importlib.import_module(f"tuner.models.{module}")
    for n in (
        [module, f"lora_{module}", f"qlora_{module}"]
        + names
        + [f"lora_{n}" for n in names]
        + [f"qlora_{n}" for n in names]
    ):
        assert callable(getattr(mod, n)), n
        assert getattr(mod, n).__name__ == n and getattr(mod, n).__module__ == mod.__name__, n


def test_lora_builder_with_real_apply_lora_starts_at_base_and_converts_to_hf():
    from tuner.checkpoint.hf_keys import hf_to_tuner, tuner_to_hf
    from tuner.models.llama3_2 import llama3_2, lora_llama3_2

    dims = dict(
        vocab_size=VOCAB, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=16, intermediate_dim=48
    )
    base = llama3_2(**dims)
    model = lora_llama3_2(["q_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True, lora_rank=4, **dims)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(("lora_" in k or "magnitude" in k) for k in missing)
    tokens = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), base(tokens), rtol=1e-5, atol=1e-5)
    sd = model.state_dict()
    hf = tuner_to_hf(sd, "LLAMA3_2", {"tie_word_embeddings": True})
    assert "model.layers.1.self_attn.v_proj.lora_b.weight" in hf
    assert "model.layers.0.mlp.gate_proj.lora_a.weight" in hf
    assert set(hf_to_tuner(hf, "LLAMA3_2", {"tie_word_embeddings": True})) == set(sd)
