"""MetaCheckpointer (consolidated.00.pth + params.json) and NativeCheckpointer round trips."""

from __future__ import annotations

import json

import torch

from tests.checkpoint.conftest import hf_logits, make_hf_model
from tuner.checkpoint import MetaCheckpointer, NativeCheckpointer, load_model_state
from tuner.checkpoint.hf_config import build_model_from_hf_config


def _hf_to_meta_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of transformers' convert_llama_weights_to_hf ``permute`` (HF rotate-half -> Meta)."""
    d1, d2 = w.shape
    return w.view(n_heads, 2, d1 // n_heads // 2, d2).transpose(1, 2).reshape(d1, d2)


def _write_meta_checkpoint(hf, folder):
    c = hf.config
    sd = hf.state_dict()
    meta = {
        "tok_embeddings.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    names = {
        "self_attn.o_proj": "attention.wo",
        "self_attn.v_proj": "attention.wv",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2",
        "mlp.up_proj": "feed_forward.w3",
        "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        meta[f"layers.{i}.attention.wq.weight"] = _hf_to_meta_permute(
            sd[p + "self_attn.q_proj.weight"], c.num_attention_heads
        )
        meta[f"layers.{i}.attention.wk.weight"] = _hf_to_meta_permute(
            sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads
        )
        for hf_name, meta_name in names.items():
            meta[f"layers.{i}.{meta_name}.weight"] = sd[p + hf_name + ".weight"]
    folder.mkdir()
    torch.save({k: v.clone() for k, v in meta.items()}, folder / "consolidated.00.pth")
    params = {
        "dim": c.hidden_size,
        "n_layers": c.num_hidden_layers,
        "n_heads": c.num_attention_heads,
        "n_kv_heads": c.num_key_value_heads,
        "vocab_size": c.vocab_size,
        "norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_parameters["rope_theta"] if getattr(c, "rope_parameters", None) else c.rope_theta,
    }
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "tokenizer.model").write_bytes(b"fake sentencepiece")
    return meta


def test_meta_round_trip(tmp_path, tokens):
    hf = make_hf_model("llama")
    meta = _write_meta_checkpoint(hf, tmp_path / "meta")
    ckpt = MetaCheckpointer(tmp_path / "meta", ["consolidated.00.pth"], "LLAMA3", tmp_path / "out")
    model = build_model_from_hf_config(hf.config.to_dict(), "LLAMA3").eval()
    load_model_state(model, ckpt.load_checkpoint()["model"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)

    out = ckpt.save_checkpoint({"model": model.state_dict()}, step=2, epoch=0)
    assert {"consolidated.00.pth", "params.json", "tokenizer.model"} <= {p.name for p in out.iterdir()}
    saved = torch.load(out / "consolidated.00.pth", weights_only=True)
    assert saved.keys() == meta.keys()
    for k in meta:
        assert torch.equal(saved[k], meta[k]), k


def test_native_round_trip_and_torchtune_pt(tmp_path, tokens):
    hf = make_hf_model("qwen2")
    model = build_model_from_hf_config(hf.config.to_dict(), "QWEN2").eval()
    from tuner.checkpoint.hf_keys import hf_to_tuner

    sd = hf_to_tuner(hf.state_dict(), "QWEN2", hf.config.to_dict())
    src = tmp_path / "native"
    src.mkdir()
    torch.save(sd, src / "model_0.pt")  # torchtune's native format
    ckpt = NativeCheckpointer(src, ["model_0.pt"], "QWEN2", tmp_path / "out")
    load_model_state(model, ckpt.load_checkpoint()["model"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)
    out = ckpt.save_checkpoint({"model": model.state_dict()}, step=1, epoch=0)
    reloaded = NativeCheckpointer(out, "auto", "QWEN2", tmp_path / "out2").load_checkpoint()["model"]
    assert reloaded.keys() == model.state_dict().keys()
    assert all(torch.equal(reloaded[k], v) for k, v in model.state_dict().items())


def test_native_save_of_views_and_tied_tensors(tmp_path):
    """Views of one fused tensor (Phi-3's q/k/v after loading) and tied tensors save as separate copies."""
    from tuner.checkpoint.weights import load_weight_file, save_sharded_safetensors

    fused = torch.randn(12, 4)
    q, k, v = fused.split([4, 4, 4])
    emb = torch.randn(5, 4)
    sd = {"q": q, "k": k, "v": v, "emb": emb, "out": emb}
    assert save_sharded_safetensors(sd, tmp_path) == ["model.safetensors"]
    back = load_weight_file(tmp_path / "model.safetensors")
    assert all(torch.equal(back[n], t) for n, t in sd.items())
