"""Training-core features on a tiny model on CPU: each optimised or memory-saving path gives the
plain path's losses and weights; schedulers, validation, NaN stop, loggers and profiler work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.real_data import ALPACA
from tests.recipes.helpers import (
    checkpointer_node,
    make_hf_checkpoint,
    optimizer_node,
    tiny_checkpoint_fixture,
    tune_in_process,
    write_config,
)
from tuner.config import load_config
from tuner.errors import ConfigError
from tuner.training.full import FullFinetune
from tuner.training.trainer import Trainer

ckpt = tiny_checkpoint_fixture()


def run(tmp_path: Path, ckpt: Path, name: str, **overrides) -> tuple[Trainer, list[dict]]:
    out = tmp_path / name
    cfg = load_config(write_config(tmp_path / f"{name}.yaml", ckpt, out, **{"max_steps_per_epoch": 3, **overrides}))
    trainer = Trainer(cfg, FullFinetune())
    trainer.run()
    rows = [json.loads(line) for line in (out / "logs" / "log.jsonl").read_text().splitlines()]
    return trainer, rows


def losses(rows: list[dict]) -> list[float]:
    return [r["loss"] for r in rows if "loss" in r]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.decoder.state_dict().items()}


def assert_same(a: Trainer, b: Trainer, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=atol), k


def test_gradient_accumulation_equals_one_big_batch(ckpt, tmp_path):
    big, rows_big = run(tmp_path, ckpt, "big", batch_size=4)
    acc, rows_acc = run(tmp_path, ckpt, "acc", batch_size=2, gradient_accumulation_steps=2)
    assert losses(rows_big) == pytest.approx(losses(rows_acc), abs=1e-5)
    assert_same(big, acc, 1e-5)


def test_optimizer_in_backward_equals_a_plain_step(ckpt, tmp_path):
    plain, rows_plain = run(tmp_path, ckpt, "plain")
    inbwd, rows_inbwd = run(tmp_path, ckpt, "inbwd", optimizer_in_bwd=True)
    assert losses(rows_plain) == pytest.approx(losses(rows_inbwd), abs=1e-5)
    assert_same(plain, inbwd, 1e-5)
    assert [r["lr"] for r in rows_plain] == pytest.approx([r["lr"] for r in rows_inbwd])


def test_optimizer_in_backward_resumes_exactly(ckpt, tmp_path):
    """The lr proxy is in no optimizer state: resume sets it from the restored schedule."""
    import shutil

    straight, rows = run(tmp_path, ckpt, "straight", optimizer_in_bwd=True, save_every_n_steps=1)
    shutil.copytree(tmp_path / "straight" / "step_1", tmp_path / "resumed" / "step_1")
    resumed, rows_resumed = run(
        tmp_path, ckpt, "resumed", optimizer_in_bwd=True, save_every_n_steps=1, resume_from_checkpoint=True
    )
    assert losses(rows_resumed) == losses(rows)[1:]
    wa, wb = weights(straight), weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_activation_checkpointing_and_offloading_change_nothing(ckpt, tmp_path):
    """With both keys each layer's input is offloaded (`tuner.training.offloaded_checkpoint`); the
    sequence-tiled MLP (chunks of 16 tokens) changes nothing either."""
    plain, rows_plain = run(tmp_path, ckpt, "plain")
    saving, rows_saving = run(
        tmp_path,
        ckpt,
        "saving",
        enable_activation_checkpointing=True,
        enable_activation_offloading=True,
        mlp_chunk_size=16,
    )
    assert all(type(layer).__name__ == "OffloadedCheckpointWrapper" for layer in saving.decoder.layers)
    assert all(layer.mlp.chunk_size == 16 for layer in saving.decoder.layers)
    assert losses(rows_plain) == pytest.approx(losses(rows_saving), abs=1e-6)
    assert_same(plain, saving, 1e-6)


def test_selective_activation_checkpointing_wraps_every_nth_layer_and_changes_nothing(ckpt, tmp_path):
    plain, rows_plain = run(tmp_path, ckpt, "plain")
    selective, rows_sel = run(tmp_path, ckpt, "selective", ac_mode="selective", ac_option=2)
    wrapped = [i for i, layer in enumerate(selective.decoder.layers) if hasattr(layer, "_checkpoint_wrapped_module")]
    assert wrapped == [1]  # torchtune's choice: the 2nd, 4th, ... layer
    assert losses(rows_plain) == pytest.approx(losses(rows_sel), abs=1e-6)
    assert_same(plain, selective, 1e-6)


@pytest.mark.parametrize(
    "mode, option, message",
    [
        ("selective", 0, "ac_option=0 is not valid; it must be an integer >= 1"),
        ("selective", "op", "ac_option='op' is not valid; it must be an integer >= 1"),
        ("selective", None, "ac_mode=selective needs ac_option=N (checkpoint every N-th layer)"),
        ("sometimes", None, "ac_mode='sometimes' is not valid; it must be one of selective, full"),
    ],
)
def test_bad_selective_checkpointing_is_one_clear_error(ckpt, tmp_path, mode, option, message):
    cfg = write_config(tmp_path / "ac.yaml", ckpt, tmp_path / "ac", ac_mode=mode, ac_option=option)
    proc = tune_in_process("run", "full_finetune_single_device", "--config", str(cfg), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr


def test_checkpointed_loss_chunks_change_nothing(ckpt, tmp_path):
    plain, rows_plain = run(tmp_path, ckpt, "plain")
    recompute, rows_re = run(
        tmp_path,
        ckpt,
        "recompute",
        loss={
            "_component_": "tuner.training.loss.ChunkedCrossEntropyLoss",
            "num_output_chunks": 3,
            "checkpoint_chunks": True,
        },
    )
    assert losses(rows_plain) == pytest.approx(losses(rows_re), abs=1e-5)


def test_packed_dataset_trains(ckpt, tmp_path):
    _, rows = run(
        tmp_path,
        ckpt,
        "packed",
        dataset={
            "_component_": "tuner.datasets.alpaca_dataset",
            "source": "json",
            "data_files": str(ALPACA),
            "packed": True,
            "train_on_input": False,
        },
        batch_size=2,
    )
    assert len(losses(rows)) == 3 and all(torch.isfinite(torch.tensor(losses(rows))))


def test_fp16_with_grad_scaler_tracks_fp32(ckpt, tmp_path):
    _, rows32 = run(tmp_path, ckpt, "fp32", max_steps_per_epoch=2, optimizer=optimizer_node(0.1, "SGD"))
    t16, rows16 = run(
        tmp_path,
        ckpt,
        "fp16",
        max_steps_per_epoch=2,
        dtype="fp16",
        optimizer=optimizer_node(0.1, "SGD"),
    )
    assert t16.grad_scaler is not None
    assert losses(rows16) == pytest.approx(losses(rows32), rel=2e-3)


def test_validation_loss_is_logged(ckpt, tmp_path):
    val = {
        "_component_": "tuner.datasets.alpaca_dataset",
        "source": "json",
        "data_files": str(ALPACA),
        "split": "train[:8]",
    }
    _, rows = run(tmp_path, ckpt, "val", max_steps_per_epoch=4, dataset_val=val, run_val_every_n_steps=2)
    vals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in vals] == [2, 4] and all(8 < r["val_loss"] < 12 for r in vals)


def test_schedulers_warm_up_and_decay():
    from tuner.training.lr_schedulers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    def lrs(make) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(opt)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    cos = lrs(lambda o: get_cosine_schedule_with_warmup(o, 2, 10))
    lin = lrs(lambda o: get_linear_schedule_with_warmup(o, 2, 10))
    const = lrs(lambda o: get_constant_schedule_with_warmup(o, 2))
    assert cos[:3] == pytest.approx([0.0, 0.5, 1.0]) and cos[-1] == pytest.approx(
        0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item())
    )
    assert lin[:3] == pytest.approx([0.0, 0.5, 1.0]) and lin[6] == pytest.approx(0.5)
    assert const == pytest.approx([0.0, 0.5] + [1.0] * 8)


def test_nan_stops_the_run_and_nothing_bad_is_saved(ckpt, tmp_path):
    import re

    from safetensors.torch import load_file

    out = tmp_path / "nan"
    cfg = write_config(
        tmp_path / "nan.yaml",
        ckpt,
        out,
        max_steps_per_epoch=6,
        save_every_n_steps=1,
        optimizer=optimizer_node(1e30, "SGD"),
    )
    proc = tune_in_process("run", "full_finetune_single_device", "--config", str(cfg), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    match = re.search(r"error: (loss is (nan|inf) at step (\d+)|weights became nan/inf by step (\d+))", proc.stderr)
    assert match, proc.stderr
    failed_step = int(match.group(3) or match.group(4))
    saved = sorted(int(p.name.split("_")[1]) for p in out.glob("step_*"))
    assert all(step < failed_step for step in saved)
    for step in saved:
        assert all(torch.isfinite(t).all() for t in load_file(out / f"step_{step}" / "model.safetensors").values())


def test_unknown_top_level_key_is_an_error(ckpt, tmp_path):
    cfg = write_config(tmp_path / "typo.yaml", ckpt, tmp_path / "typo", batch_sise=4)
    proc = tune_in_process("run", "full_finetune_single_device", "--config", str(cfg), check=False)
    assert proc.returncode == 2 and "unknown config key 'batch_sise'; did you mean 'batch_size'?" in proc.stderr


def test_optimizer_in_backward_refuses_accumulation(ckpt, tmp_path):
    cfg = load_config(
        write_config(
            tmp_path / "bad.yaml", ckpt, tmp_path / "bad", optimizer_in_bwd=True, gradient_accumulation_steps=2
        )
    )
    with pytest.raises(ConfigError, match="optimizer_in_bwd=True needs gradient_accumulation_steps=1"):
        Trainer(cfg, FullFinetune())


def test_tensorboard_wandb_offline_and_profiler(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "loggers"
    loggers = [
        {
            "_component_": "tuner.training.metric_logging.JsonLinesLogger",
            "log_dir": str(out / "logs"),
            "filename": "log.jsonl",
        },
        {"_component_": "tuner.training.metric_logging.TensorBoardLogger", "log_dir": str(out / "tb")},
        {
            "_component_": "tuner.training.metric_logging.WandBLogger",
            "project": "tuner-test",
            "log_dir": str(out / "wandb"),
        },
    ]
    profiler = {"enabled": True, "wait_steps": 0, "warmup_steps": 1, "active_steps": 1, "output_dir": str(out / "prof")}
    cfg = load_config(
        write_config(tmp_path / "l.yaml", ckpt, out, max_steps_per_epoch=3, metric_logger=loggers, profiler=profiler)
    )
    Trainer(cfg, FullFinetune()).run()
    assert list((out / "tb").rglob("events.out.tfevents.*"))  # in run_<rank>_<time>/ (organize_logs)
    run_dirs = list((out / "wandb").rglob("offline-run-*"))
    assert run_dirs and any(p.name.endswith(".wandb") for p in run_dirs[0].iterdir())
    assert list((out / "prof").rglob("*.pt.trace.json*"))


def test_sharded_checkpoint_streams_in_and_a_missing_shard_is_named(tmp_path, monkeypatch):
    from tuner.checkpoint import fill
    from tuner.errors import CheckpointError

    sharded = make_hf_checkpoint(tmp_path / "sharded", max_shard_size="2MB")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) >= 2
    calls = []
    original = fill.StreamingLoad.__call__
    monkeypatch.setattr(
        fill.StreamingLoad, "__call__", lambda self, shard: (calls.append(len(shard)), original(self, shard))[1]
    )
    trainer, rows = run(
        tmp_path,
        sharded,
        "streamed",
        max_steps_per_epoch=1,
        checkpointer=checkpointer_node(sharded, tmp_path / "streamed", files=None),
    )
    assert len(calls) == len(shards)  # one shard at a time, never one merged state dict
    assert len(losses(rows)) == 1
    cfg = load_config(
        write_config(
            tmp_path / "partial.yaml",
            sharded,
            tmp_path / "partial",
            checkpointer=checkpointer_node(sharded, tmp_path / "partial", files=shards[:1]),
        )
    )
    with pytest.raises(
        CheckpointError, match=r"the checkpoint lacks \d+ weight\(s\) the model needs: .*checkpoint_files"
    ):
        Trainer(cfg, FullFinetune()).setup()


def test_optimizer_in_backward_asks_only_for_optimizers_on_the_training_device(monkeypatch):
    """A paged bitsandbytes optimizer refuses the CPU: with optimizer_in_bwd on CUDA nothing may
    build one for the CPU (the lr proxy once did, so every low-memory full config failed on a GPU)."""
    from omegaconf import OmegaConf

    from tuner.training import optim

    asked = []
    real = optim.build_optimizer
    monkeypatch.setattr(
        optim,
        "build_optimizer",
        lambda cfg, params, device: asked.append(device) or real(cfg, params, torch.device("cpu")),
    )
    model = torch.nn.Linear(3, 2)
    opt = optim.OptimizerInBackward(OmegaConf.create(optimizer_node(0.02)), model, torch.device("cuda"))
    assert asked and set(asked) == {torch.device("cuda")}
    assert opt.lr_proxy.param_groups[0]["lr"] == 0.02


def test_checkpointed_layers_are_compiled_inside_their_checkpoint_wrapper():
    """The eager checkpoint must drop and recompute what the compiled layer saves; compiling the
    wrapper instead left the recompute to the compiler (8B QLoRA: 8.55 vs 7.96 GiB peak)."""
    from tuner.training import memory

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))

    checkpointed, plain = Decoder(), Decoder()
    memory.apply_activation_checkpointing(checkpointed)
    for model in (checkpointed, plain):
        memory.compile_layers(model)
    for wrapper in checkpointed.layers:
        assert wrapper._compiled_call_impl is None
        assert wrapper._checkpoint_wrapped_module._compiled_call_impl is not None
    assert all(layer._compiled_call_impl is not None for layer in plain.layers)


def test_compiling_layers_lets_inductor_launch_tuners_triton_kernels_statically_unless_the_user_chose(monkeypatch):
    """compile_layers turns on inductor's static launcher for user-defined Triton kernels (tuner's NF4
    ops), in the environment its compile workers read and in the process's config; a user's own
    setting of the variable stands."""
    import torch._inductor.config as inductor_config

    from tuner.training import memory

    monkeypatch.setattr(inductor_config, "static_launch_user_defined_triton_kernels", False)
    monkeypatch.delenv(memory.STATIC_LAUNCH_ENV, raising=False)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
    memory.compile_layers(model)
    assert os.environ[memory.STATIC_LAUNCH_ENV] == "1"
    assert inductor_config.static_launch_user_defined_triton_kernels is True
    monkeypatch.setenv(memory.STATIC_LAUNCH_ENV, "0")
    memory.compile_layers(model)
    assert inductor_config.static_launch_user_defined_triton_kernels is False


def test_cuda_allocator_gets_expandable_segments_unless_the_user_chose(monkeypatch):
    from tuner.training import memory

    calls = []
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", calls.append, raising=False)
    deprecated = lambda _: pytest.fail("the deprecated CUDA setter was called")  # noqa: E731
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", deprecated, raising=False)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert memory.use_expandable_segments(torch.device("cpu")) is False and calls == []
    assert memory.use_expandable_segments(torch.device("cuda", 0)) is True
    assert calls == ["expandable_segments:True"]
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")  # the user's choice stands
    assert memory.use_expandable_segments(torch.device("cuda", 0)) is False and len(calls) == 1
