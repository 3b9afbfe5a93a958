"""The distributed recipes on two CUDA GPUs (NCCL, FSDP2), through the real `tune run --nproc_per_node 2`:
the same losses and saved weights as one GPU with the same global batch, for full, LoRA and QLoRA.
Needs two GPUs (skipped otherwise), no tokenizer or data files.

On the CPU, tests/recipes/test_distributed.py holds one and two processes to 1e-5. On GPUs the
float32 kernels differ with the per-GPU batch (4 rows on one GPU, 2 on each of two), so the runs
agree less closely: on two H200s (2026-11-30), full fine-tuning agreed to 1e-4 in losses and
weights; LoRA and QLoRA agreed to 1e-4 in steps 1-2, and their step-3 losses differed by 4e-4 and
1.5e-3 (of 12.3). The bounds below leave room for that (the CPU test is the exact one) and
still fail on a weight shard or an adapter lost or mixed up in gathering (differences of order one)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.recipes.helpers import LORA, SYNTHETIC, logged_losses, make_hf_checkpoint, tune, write_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.distributed,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs"),
]


@pytest.mark.parametrize("kind", ["full", "lora", "qlora"])
def test_two_gpus_match_one_gpu(tmp_path, kind):
    ckpt = make_hf_checkpoint(tmp_path / "ckpt", initializer_range=0.2, with_tokenizer=False)
    lora = None if kind == "full" else {**LORA, "quantize_base": kind == "qlora"}
    recipe = "full" if kind == "full" else "lora"
    common = {
        "device": "cuda",
        "dtype": "fp32",
        "dataset": SYNTHETIC,
        "tokenizer": {"_component_": "benchmarks.NullTokenizer"},
        "max_steps_per_epoch": 4,
        "shuffle": True,
        "enable_activation_checkpointing": kind == "qlora",
    }
    runs = {}
    for name, procs, batch in (("one", (), 4), ("two", ("--nproc_per_node", "2", "--standalone"), 2)):
        out = tmp_path / name
        cfg = write_config(tmp_path / f"{name}.yaml", ckpt, out, lora=lora, batch_size=batch, **common)
        suffix = "distributed" if procs else "single_device"
        tune("run", *procs, f"{recipe}_finetune_{suffix}", "--config", str(cfg))
        runs[name] = out
    one, two = logged_losses(runs["one"]), logged_losses(runs["two"])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert abs(one[step] - two[step]) < 5e-3, (step, one[step], two[step])
    names = ["model.safetensors"] + ([] if kind == "full" else ["adapter/adapter_model.safetensors"])
    for name in names:
        a, b = load_file(runs["one"] / "step_4" / name), load_file(runs["two"] / "step_4" / name)
        assert a.keys() == b.keys(), name
        for k in a:
            relative = ((a[k].float() - b[k].float()).norm() / a[k].float().norm().clamp(min=1e-12)).item()
            assert relative < 1e-2, (name, k, relative)
