"""Distributed recipes on CPU with gloo, 2 processes (FSDP2): same losses and checkpoint as one
device with the same global batch, exact kill-and-resume, and a 2-"node" torchrun launch."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.recipes.helpers import (
    ROOT,
    assert_kill_and_resume_exact,
    logged_losses,
    tiny_checkpoint_fixture,
    tune,
    tune_in_process,
    write_config,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
TWO = ("--nproc_per_node", "2", "--standalone")
LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": True, "lora_rank": 4, "lora_alpha": 8}


ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


def _pair(
    tmp_path: Path, ckpt: Path, kind: str, lora: dict | None, dist_args: tuple[str, ...] = (), **kw
) -> tuple[Path, Path]:
    """Train 4 steps on one process (batch 4) and on two (batch 2 each, ``dist_args`` appended to its
    command line); return both output dirs."""
    single, dist = tmp_path / "single", tmp_path / "dist"
    common = {"max_steps_per_epoch": 4, "shuffle": True, **kw}
    tune_in_process(  # the one-device reference; the distributed side is a real torchrun launch
        "run",
        f"{kind}_finetune_single_device",
        "--config",
        str(write_config(tmp_path / "s.yaml", ckpt, single, lora=lora, batch_size=4, **common)),
    )
    tune(
        "run",
        *TWO,
        f"{kind}_finetune_distributed",
        "--config",
        str(write_config(tmp_path / "d.yaml", ckpt, dist, lora=lora, batch_size=2, **common)),
        *dist_args,
    )
    return single, dist


def _assert_same_run(single: Path, dist: Path, weights: str) -> None:
    ls, ld = logged_losses(single), logged_losses(dist)
    assert sorted(ls) == sorted(ld) == [1, 2, 3, 4]
    for step in ls:
        assert abs(ls[step] - ld[step]) < 1e-5, (step, ls[step], ld[step])
    a, b = load_file(single / "step_4" / weights), load_file(dist / "step_4" / weights)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_full_distributed_matches_single_device_with_gathered_state(ckpt, tmp_path):
    """checkpointer.sharded_state=False: the optimizer is gathered into training_state.pt, and the
    distributed run resumes on one device (one launch checks both: the sharded state's own runs are
    the kill-and-resume tests below)."""
    single, dist = _pair(
        tmp_path, ckpt, "full", None, ("checkpointer.sharded_state=False",), gradient_accumulation_steps=1
    )
    _assert_same_run(single, dist, "model.safetensors")
    assert (dist / "step_4" / "training_state.pt").is_file() and not (dist / "step_4" / "sharded_state").exists()
    again = tune_in_process(
        "run",
        "full_finetune_single_device",
        "--config",
        str(tmp_path / "d.yaml"),
        "resume_from_checkpoint=True",
        "epochs=2",
    )
    assert "resuming at step 4" in again.stdout


def test_lora_distributed_matches_single_device_with_accumulation(ckpt, tmp_path):
    single, dist = _pair(tmp_path, ckpt, "lora", LORA, gradient_accumulation_steps=2, max_steps_per_epoch=2)
    ls, ld = logged_losses(single), logged_losses(dist)
    assert sorted(ls) == sorted(ld) == [1, 2]
    for step in ls:
        assert abs(ls[step] - ld[step]) < 1e-5, (step, ls[step], ld[step])
    for name in ("adapter/adapter_model.safetensors", "model.safetensors"):
        a, b = load_file(single / "step_2" / name), load_file(dist / "step_2" / name)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name


def _plant_damaged_step(out: Path) -> Path:
    """Beside the newest complete step, a newer one whose sharded state is cut short and whose
    manifest is missing (a save killed mid-way, or a copy gone wrong): resume must ignore it."""
    import shutil

    from tuner.checkpoint import MARKER_NAME, latest_checkpoint

    step, folder = latest_checkpoint(out)
    bad = out / f"step_{step + 100}"
    shutil.copytree(folder, bad)
    (bad / MARKER_NAME).unlink()
    for shard in (bad / "sharded_state").glob("*.distcp"):
        shard.write_bytes(shard.read_bytes()[:100])
    return folder


def test_distributed_kill_and_resume_is_exact(ckpt, tmp_path):
    """Full fine-tune: every weight comes back from the sharded (DCP) state, written by both
    ranks; the exported model of the resumed step is not read (removed here to prove it)."""

    def prepare(out: Path) -> None:
        folder = _plant_damaged_step(out)
        assert sorted(p.name for p in (folder / "sharded_state").iterdir()) == [
            ".metadata",
            "__0_0.distcp",
            "__1_0.distcp",
        ]
        assert not (folder / "training_state.pt").exists()  # no optimizer gathered on rank 0
        (folder / "model.safetensors").unlink()

    again = assert_kill_and_resume_exact(
        "full_finetune_distributed", ckpt, tmp_path, launcher=TWO, batch_size=2, before_resume=prepare
    )
    assert "(sharded training state of 2 ranks)" in again.stdout

    # The same sharded state, resumed on another number of ranks: one clear error, no traceback.
    proc = tune(
        "run",
        "--nproc_per_node",
        "1",
        "--standalone",
        "full_finetune_distributed",
        "--config",
        str(tmp_path / "b.yaml"),  # assert_kill_and_resume_exact's resumed run
        "resume_from_checkpoint=True",
        check=False,
    )
    assert proc.returncode != 0
    assert (
        "error: the checkpoint" in proc.stderr
        and "sharded across 2 processes, but this run has one process" in proc.stderr
    )
    assert "--nproc_per_node 2" in proc.stderr and "Traceback" not in proc.stderr


def test_distributed_lora_kill_and_resume_is_exact(ckpt, tmp_path):
    """LoRA: the base comes from checkpoint_dir as at the start, the adapters and their optimizer
    state from the sharded state (the exported adapter and merged model are not read)."""
    import shutil

    def prepare(out: Path) -> None:
        folder = _plant_damaged_step(out)
        shutil.rmtree(folder / "adapter")
        (folder / "model.safetensors").unlink()

    again = assert_kill_and_resume_exact(
        "lora_finetune_distributed",
        ckpt,
        tmp_path,
        lora=LORA,
        adapter=True,
        launcher=TWO,
        batch_size=2,
        before_resume=prepare,
    )
    assert "(sharded training state of 2 ranks)" in again.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_launch_on_localhost(ckpt, tmp_path):
    out = tmp_path / "two_nodes"
    cfg = write_config(tmp_path / "n.yaml", ckpt, out, batch_size=2, max_steps_per_epoch=2)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuner.cli.main",
                "run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "full_finetune_distributed",
                "--config",
                str(cfg),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, se) in zip(procs, results):
        assert p.returncode == 0, se[-3000:]
    assert sorted(logged_losses(out)) == [1, 2]
    assert (out / "step_2" / "model.safetensors").is_file()


def test_rank_error_ends_job_with_its_message(ckpt, tmp_path):
    cfg = write_config(tmp_path / "e.yaml", ckpt, tmp_path / "e", batch_size=2)
    proc = tune(
        "run",
        *TWO,
        "full_finetune_distributed",
        "--config",
        str(cfg),
        "checkpointer.checkpoint_files=[nope.safetensors]",
        check=False,
    )
    assert proc.returncode != 0
    assert "nope.safetensors" in proc.stderr and "error:" in proc.stderr


@pytest.mark.parametrize(
    "base",
    [{"quantize_base": True}, {"base_dtype": "fp8"}, {"quantize_base": True, "base_dtype": "fp8"}],
    ids=["nf4", "fp8", "nf4_computing_in_fp8"],
)
def test_quantized_base_distributed_matches_single_device(ckpt, tmp_path, base):
    """The NF4 or FP8 base (replicated buffers) reaches every rank by broadcast from rank 0; an NF4 base
    computing in FP8 (QLoRA with base_dtype) does so on every rank too."""
    single, dist = _pair(
        tmp_path, ckpt, "lora", {**LORA, **base}, max_steps_per_epoch=2, save_adapter_weights_only=True
    )
    ls, ld = logged_losses(single), logged_losses(dist)
    assert sorted(ls) == sorted(ld) == [1, 2]
    for step in ls:
        assert abs(ls[step] - ld[step]) < 1e-5, (step, ls[step], ld[step])
    a, b = (
        load_file(single / "step_2" / "adapter_model.safetensors"),
        load_file(dist / "step_2" / "adapter_model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
