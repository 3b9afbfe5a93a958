"""Atomic step folders, resume discovery, keep_last_n, failed and killed saves, training state."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tuner.checkpoint.weights as weights
from tests.checkpoint.conftest import hf_logits, make_hf_model, save_hf_model
from tuner.checkpoint import (
    MARKER_NAME,
    HFCheckpointer,
    NativeCheckpointer,
    capture_rng_state,
    list_checkpoints,
    restore_rng_state,
)
from tuner.errors import CheckpointError, UsageError

ROOT = Path(__file__).resolve().parents[2]


def _sd(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "tok_embeddings.weight": torch.randn(16, 8, generator=g),
        "layers.0.attn.q_proj.weight": torch.randn(8, 8, generator=g),
        "norm.scale": torch.randn(8, generator=g),
    }


@pytest.fixture
def native_src(tmp_path) -> Path:
    from safetensors.torch import save_file

    src = tmp_path / "base"
    src.mkdir()
    save_file(_sd(0), str(src / "model.safetensors"))
    (src / "tokenizer.json").write_text("{}")
    return src


def _native(src: Path, out: Path, **kw) -> NativeCheckpointer:
    return NativeCheckpointer(src, None, "LLAMA3_2", out, **kw)


def _assert_sd_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_save_writes_complete_folder_and_resume_picks_newest(native_src, tmp_path):
    out = tmp_path / "out"
    ckpt = _native(native_src, out)
    _assert_sd_equal(ckpt.load_checkpoint()["model"], _sd(0))
    for step in (2, 10, 4):  # newest means highest step, not last written
        ts = {
            "global_step": step,
            "epoch": 0,
            "rng": capture_rng_state(),
            "opt": {"state": {0: {"m": torch.ones(3)}}, "lr": [0.1]},
        }
        path = ckpt.save_checkpoint({"model": _sd(step), "training_state": ts}, step=step, epoch=0)
        assert path == out / f"step_{step}"
        marker = json.loads((path / MARKER_NAME).read_text())
        assert marker["step"] == step and marker["format"] == "native"
        assert "model.safetensors" in marker["files"] and "training_state.pt" in marker["files"]
    assert [s for s, _ in list_checkpoints(out)] == [2, 4, 10]
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]

    resumed = _native(native_src, out, resume_from_checkpoint=True)
    assert resumed.resume_dir == out / "step_10"
    state = resumed.load_checkpoint()
    _assert_sd_equal(state["model"], _sd(10))
    assert state["training_state"]["global_step"] == 10
    assert torch.equal(state["training_state"]["opt"]["state"][0]["m"], torch.ones(3))
    assert state["resumed_from"]["step"] == 10
    assert (out / "step_10" / "tokenizer.json").is_file()


def test_resume_without_checkpoint_says_how_to_start_fresh(native_src, tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint") as e:
        _native(native_src, tmp_path / "empty", resume_from_checkpoint=True)
    assert "resume_from_checkpoint=False" in str(e.value)


def test_resume_from_folder_without_training_state_fails_clearly(native_src, tmp_path):
    ckpt = _native(native_src, tmp_path / "out")
    ckpt.save_checkpoint({"model": _sd(1)}, step=1, epoch=0)
    with pytest.raises(CheckpointError, match="training_state.pt"):
        _native(native_src, tmp_path / "out", resume_from_checkpoint=True).load_checkpoint()


def test_incomplete_and_temporary_folders_are_never_checkpoints(native_src, tmp_path):
    out = tmp_path / "out"
    ckpt = _native(native_src, out)
    ckpt.save_checkpoint({"model": _sd(1), "training_state": {"global_step": 1}}, step=1, epoch=0)
    # a step folder without the marker (e.g. copied by hand, half deleted) and a stale temporary
    (out / "step_9").mkdir()
    (out / "step_9" / "model.safetensors").write_bytes(b"garbage")
    (out / ".tmp-step_12-999999").mkdir()
    assert [s for s, _ in list_checkpoints(out)] == [1]
    assert _native(native_src, out, resume_from_checkpoint=True).resume_dir == out / "step_1"


def test_keep_last_n_prunes_oldest_after_a_successful_save(native_src, tmp_path):
    out = tmp_path / "out"
    ckpt = _native(native_src, out, keep_last_n_checkpoints=2)
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint({"model": _sd(step)}, step=step, epoch=0)
    assert sorted(p.name for p in out.iterdir()) == ["step_3", "step_4"]
    # re-saving an existing step replaces it and never removes the one just written
    ckpt.save_checkpoint({"model": _sd(40)}, step=4, epoch=1)
    assert sorted(p.name for p in out.iterdir()) == ["step_3", "step_4"]
    _assert_sd_equal(_native(out / "step_4", out).load_checkpoint()["model"], _sd(40))
    with pytest.raises(Exception, match="at least 1"):
        _native(native_src, out, keep_last_n_checkpoints=0)


def test_failing_save_damages_nothing(native_src, tmp_path, monkeypatch):
    """Inject a write failure after the first shard: no step folder appears, earlier ones load."""
    hf = make_hf_model("llama")
    src = save_hf_model(hf, tmp_path / "src")
    out = tmp_path / "out"
    ckpt = HFCheckpointer(src, "auto", "LLAMA3", out, max_shard_size="20KB")
    model_sd = ckpt.load_checkpoint()["model"]
    good = ckpt.save_checkpoint({"model": model_sd, "training_state": {"global_step": 5}}, step=5, epoch=0)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    real = weights.write_safetensors_file
    calls = []

    def flaky(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(tensors, path, metadata)

    monkeypatch.setattr(weights, "write_safetensors_file", flaky)
    for step in (10, 5):  # a new step, and a replacement of the existing one
        calls.clear()
        with pytest.raises(
            CheckpointError, match=rf"could not save checkpoint step_{step} .*the disk is full.*step_5 .* is intact"
        ):
            ckpt.save_checkpoint({"model": model_sd, "training_state": {"global_step": step}}, step=step, epoch=1)
        assert len(calls) == 2
    monkeypatch.setattr(weights, "write_safetensors_file", real)

    assert sorted(p.name for p in out.iterdir()) == ["step_5"]  # no step_10, no temporaries
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    resumed = HFCheckpointer(src, "auto", "LLAMA3", out, resume_from_checkpoint=True)
    assert resumed.resume_dir == good
    assert resumed.load_checkpoint()["training_state"]["global_step"] == 5
    torch.testing.assert_close(hf_logits(good, torch.arange(8)[None]), hf_logits(hf, torch.arange(8)[None]))


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    import tuner.checkpoint.weights as weights
    from tuner.checkpoint import HFCheckpointer

    real = weights.write_safetensors_file
    count = [0]
    def dying(tensors, path, metadata=None):
        real(tensors, path, metadata)
        count[0] += 1
        if count[0] == 2:
            os._exit(9)  # killed mid-save: no cleanup, no exception handlers
    weights.write_safetensors_file = dying
    ckpt = HFCheckpointer({src!r}, "auto", "LLAMA3", {out!r}, max_shard_size="20KB")
    state = ckpt.load_checkpoint()
    ckpt.save_checkpoint({{"model": state["model"], "training_state": {{"global_step": 7}}}}, step=7, epoch=0)
    """
)


def test_process_killed_mid_save_leaves_previous_checkpoint(tmp_path):
    hf = make_hf_model("llama")
    src = save_hf_model(hf, tmp_path / "src")
    out = tmp_path / "out"
    ckpt = HFCheckpointer(src, "auto", "LLAMA3", out, max_shard_size="20KB")
    ckpt.save_checkpoint(
        {"model": ckpt.load_checkpoint()["model"], "training_state": {"global_step": 3}}, step=3, epoch=0
    )

    script = KILL_SCRIPT.format(root=str(ROOT), src=str(src), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    leftovers = [p for p in out.iterdir() if p.name.startswith(".tmp-step_7-")]
    assert leftovers and any(leftovers[0].glob("*.safetensors"))  # it really died half-way

    resumed = HFCheckpointer(src, "auto", "LLAMA3", out, resume_from_checkpoint=True)
    assert resumed.resume_dir == out / "step_3"
    assert resumed.load_checkpoint()["training_state"]["global_step"] == 3
    torch.testing.assert_close(hf_logits(out / "step_3", torch.arange(8)[None]), hf_logits(hf, torch.arange(8)[None]))
    # the next save cleans up the dead process's temporary folder
    resumed.save_checkpoint({"model": resumed.load_checkpoint()["model"]}, step=4, epoch=0)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_adapter_only_native_resume_loads_base_plus_adapter(native_src, tmp_path):
    out = tmp_path / "out"
    ckpt = _native(native_src, out)
    adapter = {
        "layers.0.attn.q_proj.lora_a.weight": torch.randn(2, 8),
        "layers.0.attn.q_proj.lora_b.weight": torch.zeros(8, 2),
    }
    with pytest.raises(UsageError, match="no 'adapter'"):
        ckpt.save_checkpoint({"model": _sd(1)}, step=1, epoch=0, adapter_only=True)
    with pytest.raises(UsageError, match="adapter parameters"):
        ckpt.save_checkpoint({"model": {**_sd(1), **adapter}}, step=1, epoch=0)
    path = ckpt.save_checkpoint(
        {"adapter": adapter, "adapter_config": {"lora_rank": 2}, "training_state": {"global_step": 2}},
        step=2,
        epoch=0,
        adapter_only=True,
    )
    assert not (path / "model.safetensors").exists()
    state = _native(native_src, out, resume_from_checkpoint=True).load_checkpoint()
    _assert_sd_equal(state["model"], _sd(0))  # the base, from checkpoint_dir
    _assert_sd_equal(state["adapter"], adapter)
    # a full save of an adapter run holds merged weights: resume still uses base + adapter
    ckpt.save_checkpoint({"model": _sd(3), "adapter": adapter, "training_state": {"global_step": 3}}, step=3, epoch=0)
    state = _native(native_src, out, resume_from_checkpoint=True).load_checkpoint()
    _assert_sd_equal(state["model"], _sd(0))
    # an explicit adapter_checkpoint (file or folder) loads too
    state = _native(native_src, out, adapter_checkpoint=out / "step_3").load_checkpoint()
    _assert_sd_equal(state["adapter"], adapter)


def test_training_state_is_weights_only_loadable(native_src, tmp_path):
    ckpt = _native(native_src, tmp_path / "out")
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ts = {
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "np": np.arange(3),
        "np_scalar": np.float32(2.5),
    }
    ts["lr_scheduler"].pop("lr_lambdas", None)
    ckpt.save_checkpoint({"model": _sd(1), "training_state": ts}, step=1, epoch=0)
    loaded = torch.load(tmp_path / "out" / "step_1" / "training_state.pt", weights_only=True)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(loaded["np"], torch.arange(3)) and loaded["np_scalar"] == 2.5

    with pytest.raises(CheckpointError, match=r"training_state\['bad'\].*weights_only"):
        ckpt.save_checkpoint({"model": _sd(1), "training_state": {"bad": object()}}, step=2, epoch=0)
    assert [s for s, _ in ckpt.list_checkpoints()] == [1]


def test_rng_round_trip():
    import numpy as np

    state = capture_rng_state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3))
    random.random()
    torch.rand(5)
    np.random.rand()
    restore_rng_state(state)
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])
    # the state itself survives torch.save / weights_only load
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restore_rng_state(torch.load(buf, weights_only=True))
    assert random.random() == expected[0]


def test_crash_while_replacing_a_step_keeps_the_old_copy(native_src, tmp_path):
    """Replacing step_N moves the old copy aside first; a death between the two renames leaves the
    old copy, which discovery still finds, and the next save cleans it up."""
    out = tmp_path / "out"
    ckpt = _native(native_src, out)
    ckpt.save_checkpoint({"model": _sd(5), "training_state": {"global_step": 5}}, step=5, epoch=0)
    os.replace(out / "step_5", out / ".old-step_5-999999")  # the state right after the first rename
    assert [(s, p.name) for s, p in list_checkpoints(out)] == [(5, ".old-step_5-999999")]
    state = _native(native_src, out, resume_from_checkpoint=True).load_checkpoint()
    _assert_sd_equal(state["model"], _sd(5))
    ckpt.save_checkpoint({"model": _sd(6)}, step=5, epoch=0)
    ckpt.save_checkpoint({"model": _sd(7)}, step=7, epoch=0)
    assert sorted(p.name for p in out.iterdir()) == ["step_5", "step_7"]


def test_resume_with_another_format_is_refused(native_src, tmp_path):
    from tuner.errors import ConfigError

    out = tmp_path / "out"
    _native(native_src, out).save_checkpoint({"model": _sd(1), "training_state": {"global_step": 1}}, step=1, epoch=0)
    hf = make_hf_model("llama")
    src = save_hf_model(hf, tmp_path / "src")
    with pytest.raises(ConfigError, match="written in 'native' format"):
        HFCheckpointer(src, None, "LLAMA3", out, resume_from_checkpoint=True)


def test_sharded_training_state_lives_inside_the_atomic_step_folder(native_src, tmp_path):
    """The distributed trainer writes its DCP shards through ``write_extra`` into the temporary
    folder; the manifest records them, and resume finds them (no training_state.pt needed)."""
    out = tmp_path / "out"
    ckpt = _native(native_src, out)

    def write_shards(tmp: Path) -> None:
        (tmp / "sharded_state").mkdir()
        (tmp / "sharded_state" / "__0_0.distcp").write_bytes(b"shard")

    info = {"dir": "sharded_state", "world_size": 2}
    ckpt.save_checkpoint({"model": _sd(3), "sharded_state": info}, step=3, epoch=0, write_extra=write_shards)
    marker = json.loads((out / "step_3" / MARKER_NAME).read_text())
    assert marker["sharded_state"] == info and marker["has_training_state"]
    assert "sharded_state/__0_0.distcp" in marker["files"]

    # a save that dies while the shards are written leaves no step folder behind
    def fail(tmp: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(CheckpointError, match="disk full"):
        ckpt.save_checkpoint({"model": _sd(5), "sharded_state": info}, step=5, epoch=0, write_extra=fail)
    # an incomplete sharded step (no manifest) is not a checkpoint either
    (out / "step_7" / "sharded_state").mkdir(parents=True)
    (out / "step_7" / "sharded_state" / "__0_0.distcp").write_bytes(b"half")
    assert [s for s, _ in list_checkpoints(out)] == [3]

    resumed = _native(native_src, out, resume_from_checkpoint=True)
    assert resumed.resume_sharded_state == {
        "path": out / "step_3" / "sharded_state",
        "world_size": 2,
        "step_dir": out / "step_3",
    }
    state = resumed.load_checkpoint()
    assert "training_state" not in state and state["resumed_from"]["step"] == 3


def test_sharded_state_resumes_only_on_the_same_number_of_ranks(tmp_path):
    from tuner.checkpoint.sharded import check_world_size

    check_world_size({"world_size": 2}, 2, tmp_path)
    with pytest.raises(CheckpointError, match="sharded across 2 processes, but this run has one process") as e:
        check_world_size({"world_size": 2}, 1, tmp_path)
    assert "--nproc_per_node 2" in str(e.value) and f"checkpointer.checkpoint_dir={tmp_path}" in str(e.value)
