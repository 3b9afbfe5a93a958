"""transformers save_pretrained -> HFCheckpointer load -> save -> transformers load: same logits."""

from __future__ import annotations

import json

import pytest
import torch

from tests.checkpoint.conftest import FAMILIES, hf_logits, make_hf_model, save_hf_model
from tuner.checkpoint import HFCheckpointer, load_model_state
from tuner.checkpoint.hf_config import build_model_from_hf_config


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_same_logits(tmp_path, family, sharded, tokens):
    model_type = FAMILIES[family][0]
    hf = make_hf_model(family)
    src = save_hf_model(hf, tmp_path / "src", sharded=sharded)
    if sharded:
        assert (src / "model.safetensors.index.json").is_file()
    expected = hf_logits(hf, tokens)

    ckpt = HFCheckpointer(src, "auto", model_type, tmp_path / "out", max_shard_size="20KB" if sharded else "5GB")
    state = ckpt.load_checkpoint()

    # the tuner model built from the same config takes the converted weights and agrees
    model = build_model_from_hf_config(ckpt.hf_config, model_type).eval()
    load_model_state(model, state["model"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), expected, atol=1e-4, rtol=1e-4)

    out = ckpt.save_checkpoint({"model": model.state_dict()}, step=3, epoch=0)
    assert out == tmp_path / "out" / "step_3"
    assert (out / "model.safetensors.index.json").is_file() == sharded
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    torch.testing.assert_close(hf_logits(out, tokens), expected, atol=1e-5, rtol=1e-5)


def test_bf16_save_updates_config_dtype(tmp_path, tokens):
    hf = make_hf_model("llama")
    src = save_hf_model(hf, tmp_path / "src")
    ckpt = HFCheckpointer(src, None, "llama3", tmp_path / "out")
    sd = {k: v.to(torch.bfloat16) for k, v in ckpt.load_checkpoint()["model"].items()}
    out = ckpt.save_checkpoint({"model": sd}, step=1, epoch=0)
    config = json.loads((out / "config.json").read_text())
    dtype_keys = [k for k in ("torch_dtype", "dtype") if k in config]
    assert dtype_keys and all(config[k] == "bfloat16" for k in dtype_keys)
    import transformers

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.dtype == torch.bfloat16
    with torch.no_grad():
        got = reloaded(tokens).logits.float()
    torch.testing.assert_close(got, hf_logits(hf.to(torch.bfloat16), tokens).float())


def test_legacy_bin_loads(tmp_path, tokens):
    hf = make_hf_model("qwen2")
    src = tmp_path / "src"
    hf.config.save_pretrained(src)
    sd = hf.state_dict()
    keys = list(sd)
    half = len(keys) // 2
    shards = {"pytorch_model-00001-of-00002.bin": keys[:half], "pytorch_model-00002-of-00002.bin": keys[half:]}
    weight_map = {}
    for i, (name, ks) in enumerate(shards.items()):  # one zip-format shard, one pre-1.6 pickle
        torch.save({k: sd[k].clone() for k in ks}, src / name, _use_new_zipfile_serialization=i == 0)
        weight_map.update(dict.fromkeys(ks, name))
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    ckpt = HFCheckpointer(src, "auto", "QWEN2", tmp_path / "out")
    assert [p.name for p in ckpt.checkpoint_files] == list(shards)
    model = build_model_from_hf_config(ckpt.hf_config, "QWEN2").eval()
    load_model_state(model, ckpt.load_checkpoint()["model"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)
    out = ckpt.save_checkpoint({"model": model.state_dict()}, step=1, epoch=0)
    assert (out / "model.safetensors").is_file()  # saved as safetensors, loadable by transformers
    torch.testing.assert_close(hf_logits(out, tokens), hf_logits(hf, tokens), atol=1e-5, rtol=1e-5)


def test_fill_model_streams_a_meta_model_shard_by_shard(tmp_path, tokens, monkeypatch):
    """The one fill path (training, generation, eval, merge): each weight file is handed over and
    dropped, never one merged state dict; the model ends with no meta tensor and HF's logits."""
    from tuner.checkpoint import fill
    from tuner.errors import CheckpointError

    hf = make_hf_model("smollm2")
    src = save_hf_model(hf, tmp_path / "src", sharded=True)
    n_files = len(list(src.glob("model-*.safetensors")))
    ckpt = HFCheckpointer(
        src,
        {"filename_format": "model-{}-of-{}.safetensors", "max_filename": f"{n_files:05d}"},
        "SMOLLM2",
        tmp_path / "out",
    )
    assert n_files > 1 and len(ckpt.checkpoint_files) == n_files
    seen = []
    result = ckpt.load_checkpoint(on_shard=lambda sd: seen.append(set(sd)))
    assert "model" not in result and len(seen) == n_files
    assert set().union(*seen) == set(build_model_from_hf_config(ckpt.hf_config, "SMOLLM2").state_dict())

    shards = []
    original = fill.StreamingLoad.__call__
    monkeypatch.setattr(
        fill.StreamingLoad, "__call__", lambda self, sd: (shards.append(len(sd)), original(self, sd))[1]
    )
    with torch.device("meta"):
        model = build_model_from_hf_config(ckpt.hf_config, "SMOLLM2")
    extras = fill.fill_model(model, ckpt, torch.device("cpu"), torch.float32)
    assert extras == {} and len(shards) == n_files
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())  # rope tables recomputed
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)

    partial = HFCheckpointer(src, [p.name for p in ckpt.checkpoint_files[:1]], "SMOLLM2", tmp_path / "out")
    with torch.device("meta"):
        model = build_model_from_hf_config(ckpt.hf_config, "SMOLLM2")
    with pytest.raises(CheckpointError, match=r"the checkpoint lacks \d+ weight\(s\) the model needs"):
        fill.fill_model(model, partial, torch.device("cpu"), torch.float32)


def test_safe_serialization_false_writes_bin(tmp_path, tokens):
    hf = make_hf_model("mistral")
    src = save_hf_model(hf, tmp_path / "src")
    ckpt = HFCheckpointer(src, None, "MISTRAL", tmp_path / "out", safe_serialization=False)
    out = ckpt.save_checkpoint(ckpt.load_checkpoint(), step=1, epoch=0)
    assert (out / "pytorch_model.bin").is_file() and not (out / "model.safetensors").exists()
    again = HFCheckpointer(out, None, "MISTRAL", tmp_path / "out2")
    assert [p.name for p in again.checkpoint_files] == ["pytorch_model.bin"]
    model = build_model_from_hf_config(again.hf_config, "MISTRAL").eval()
    load_model_state(model, again.load_checkpoint()["model"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)
