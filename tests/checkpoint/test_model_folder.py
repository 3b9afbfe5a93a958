"""`save_model_folder` (merge's writer): a complete model folder in the checkpointer's format,
the same files a training checkpoint holds for its model, published atomically; a failed write
leaves nothing behind."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.checkpoint.conftest import hf_logits, make_hf_model, save_hf_model
from tuner.checkpoint import MARKER_NAME, HFCheckpointer, save_model_folder
from tuner.errors import CheckpointError, UsageError


@pytest.fixture
def hf_ckpt(tmp_path) -> HFCheckpointer:
    src = save_hf_model(make_hf_model("smollm2"), tmp_path / "src")
    return HFCheckpointer(src, None, "SMOLLM2", tmp_path / "runs")


def test_model_folder_is_a_training_checkpoints_model_part(hf_ckpt, tmp_path, tokens):
    state = {k: v.to(torch.bfloat16) for k, v in hf_ckpt.load_checkpoint()["model"].items()}
    folder = save_model_folder(hf_ckpt, state, tmp_path / "export" / "merged", manifest={"note": "merged"})
    step = hf_ckpt.save_checkpoint({"model": state}, step=1, epoch=0)

    names = {p.name for p in folder.iterdir()}
    assert names == {p.name for p in step.iterdir()}  # the same writer: weights, config, side files, manifest
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } < names
    a, b = load_file(folder / "model.safetensors"), load_file(step / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((folder / "config.json").read_text())
    assert "bfloat16" in (config.get("torch_dtype"), config.get("dtype"))
    manifest = json.loads((folder / MARKER_NAME).read_text())
    assert manifest["format"] == "hf" and manifest["model_type"] == "SMOLLM2" and manifest["note"] == "merged"
    assert manifest["source_checkpoint_dir"] == str(hf_ckpt.checkpoint_dir) and "step" not in manifest
    assert sorted(manifest["files"]) == sorted(names - {MARKER_NAME})
    assert [p.name for p in folder.parent.iterdir()] == ["merged"]  # no temporary left
    torch.testing.assert_close(hf_logits(folder, tokens).float(), hf_logits(step, tokens).float())


def test_failed_write_leaves_nothing_and_says_why(hf_ckpt, tmp_path, monkeypatch):
    state = hf_ckpt.load_checkpoint()["model"]
    target = tmp_path / "export" / "merged"

    def full_disk(state_dict, folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hf_ckpt, "_write_model", full_disk)
    with pytest.raises(CheckpointError, match="could not write the model folder .*the disk is full") as e:
        save_model_folder(hf_ckpt, state, target)
    assert "free disk space" in str(e.value)
    assert list(target.parent.iterdir()) == []
    monkeypatch.undo()

    with pytest.raises(UsageError, match="holds adapter parameters"):
        save_model_folder(hf_ckpt, {**state, "layers.0.attn.q_proj.lora_a.weight": torch.zeros(2, 2)}, target)
    assert list(target.parent.iterdir()) == []


def test_an_existing_folder_is_replaced_whole(hf_ckpt, tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    save_model_folder(hf_ckpt, hf_ckpt.load_checkpoint()["model"], target)
    assert not (target / "stale.bin").exists() and (target / MARKER_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "src"]  # the old copy is gone too
