"""Clear errors: mismatched model and checkpoint, missing files, missing config, unknown model_type."""

from __future__ import annotations

import json

import pytest
import torch

from tests.checkpoint.conftest import FAMILIES, make_hf_model, save_hf_model
from tuner.checkpoint import HFCheckpointer, MetaCheckpointer, NativeCheckpointer, load_model_state
from tuner.checkpoint.files import resolve_files
from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.errors import CheckpointError, ConfigError


@pytest.fixture
def llama_src(tmp_path):
    return save_hf_model(make_hf_model("llama"), tmp_path / "src", sharded=True)


def _model(src, model_type="LLAMA3", **overrides):
    config = {**json.loads((src / "config.json").read_text()), **overrides}
    return build_model_from_hf_config(config, model_type)


def test_wrong_size_lists_shape_mismatches(llama_src, tmp_path):
    sd = HFCheckpointer(llama_src, None, "LLAMA3", tmp_path / "o").load_checkpoint()["model"]
    model = _model(llama_src, intermediate_size=48)
    with pytest.raises(CheckpointError) as e:
        load_model_state(model, sd)
    msg = str(e.value)
    assert "shape mismatch" in msg and "layers.0.mlp.w1.weight: checkpoint [64, 32] vs model [48, 32]" in msg
    assert "(6 in all)" in msg  # w1, w2, w3 in 2 layers: first few shown plus the count
    assert "other dimensions" in msg


def test_missing_and_unexpected_keys_are_listed(llama_src, tmp_path):
    sd = HFCheckpointer(llama_src, None, "LLAMA3", tmp_path / "o").load_checkpoint()["model"]
    deeper = _model(llama_src, num_hidden_layers=3)
    with pytest.raises(
        CheckpointError, match=r"key\(s\) the model needs are missing.*layers\.2\.attn\.q_proj\.weight"
    ) as e:
        load_model_state(deeper, sd)
    assert "more layers than the checkpoint" in str(e.value)
    shallower = _model(llama_src, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match=r"checkpoint key\(s\) the model does not have: layers\.1\."):
        load_model_state(shallower, sd)
    # non-strict: missing/unexpected are returned, shapes still checked
    result = load_model_state(shallower, sd, strict=False)
    assert result.unexpected_keys and not result.missing_keys


def test_hf_keys_into_tuner_model_names_the_cause(llama_src):
    from safetensors.torch import load_file

    raw = {}
    for f in sorted(llama_src.glob("model-*.safetensors")):
        raw.update(load_file(str(f)))
    with pytest.raises(CheckpointError, match="Hugging Face layout"):
        load_model_state(_model(llama_src), raw)


def test_wrong_family_model_type_against_config(llama_src, tmp_path):
    with pytest.raises(ConfigError, match="config.json says model_type 'llama'") as e:
        HFCheckpointer(llama_src, None, "GEMMA2", tmp_path / "o")
    assert "LLAMA3" in str(e.value)


def test_unknown_model_type_suggests(llama_src, tmp_path):
    with pytest.raises(ConfigError, match="unknown checkpointer.model_type 'LLAMA_3'") as e:
        HFCheckpointer(llama_src, None, "LLAMA_3", tmp_path / "o")
    assert "did you mean 'LLAMA3'" in str(e.value)
    with pytest.raises(ConfigError, match="model_type is not set"):
        HFCheckpointer(llama_src, None, None, tmp_path / "o")


def test_missing_config_json(llama_src, tmp_path):
    (llama_src / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json not found"):
        HFCheckpointer(llama_src, None, "LLAMA3", tmp_path / "o")


def test_missing_dir_and_files(llama_src, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        HFCheckpointer(tmp_path / "nope", None, "LLAMA3", tmp_path / "o")
    with pytest.raises(CheckpointError, match=r"not found.*model-00009-of-00009\.safetensors"):
        HFCheckpointer(llama_src, ["model-00009-of-00009.safetensors"], "LLAMA3", tmp_path / "o")
    with pytest.raises(CheckpointError, match="no meta weight files"):
        MetaCheckpointer(llama_src, "auto", "LLAMA3", tmp_path / "o")
    shard = sorted(llama_src.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"index .* lists files that are missing: model-0000\d-of-0000\d"):
        HFCheckpointer(llama_src, None, "LLAMA3", tmp_path / "o")
    with pytest.raises(ConfigError, match="output_dir is not set"):
        NativeCheckpointer(llama_src, None, "LLAMA3", None)


def test_file_list_forms(llama_src):
    shards = sorted(p.name for p in llama_src.glob("model-*.safetensors"))
    n = len(shards)
    by_pattern = resolve_files(
        llama_src, {"filename_format": "model-{}-of-{}.safetensors", "max_filename": f"{n:05d}"}, "hf"
    )
    assert [p.name for p in by_pattern] == shards
    assert [p.name for p in resolve_files(llama_src, "auto", "hf")] == shards
    assert [p.name for p in resolve_files(llama_src, ["model.safetensors.index.json"], "hf")] == shards
    assert [p.name for p in resolve_files(llama_src, shards[::-1], "hf")] == shards[::-1]
    with pytest.raises(ConfigError, match="not a valid pattern"):
        resolve_files(llama_src, {"filename_format": "model.safetensors", "max_filename": "2"}, "hf")


def test_truncated_and_unsafe_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="cannot read"):
        NativeCheckpointer(src, None, "LLAMA3", tmp_path / "o").load_checkpoint()
    (src / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.ones(1), "x": Evil()}, src / "model.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        NativeCheckpointer(src, ["model.pt"], "LLAMA3", tmp_path / "o").load_checkpoint()


def test_every_family_model_type_is_accepted(tmp_path):
    for family, (model_type, _, _) in FAMILIES.items():
        src = save_hf_model(make_hf_model(family), tmp_path / family)
        assert HFCheckpointer(src, None, model_type.lower(), tmp_path / "o").model_type == model_type
