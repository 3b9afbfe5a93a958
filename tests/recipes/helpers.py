"""Tiny real checkpoints and configs for recipe tests: a random SmolLM2-shaped HF model with the
real SmolLM2 tokenizer, trained on tuner's quickstart instruction data (tests/real_data.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
import torch

from tests.models.hf_tiny import tiny_hf_kwargs
from tests.real_data import ALPACA, smollm2_dir
from tuner.checkpoint.hf_config import builder_kwargs_from_hf_config

ROOT = Path(__file__).resolve().parents[2]

#: The recipe tests' model: hf_tiny's SmolLM2 layout with SmolLM2's vocabulary (its real tokenizer), no pad token.
TINY = tiny_hf_kwargs(
    "smollm2", vocab_size=49152, intermediate_size=128, max_position_embeddings=512, pad_token_id=None
)

#: The recipe tests' usual adapter: LoRA on every attention projection and the MLP, rank 8.
LORA = {
    "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
    "apply_lora_to_mlp": True,
    "lora_rank": 8,
    "lora_alpha": 16,
}
#: Random token sequences of SmolLM2's vocabulary (`benchmarks.synthetic_dataset`): no tokenizer or data files.
SYNTHETIC = {"_component_": "benchmarks.synthetic_dataset", "seq_len": 64, "num_samples": 64, "vocab_size": 49152}


def make_hf_checkpoint(
    folder: Path,
    seed: int = 0,
    initializer_range: float = 0.02,
    max_shard_size: str | None = None,
    with_tokenizer: bool = True,
    **config,
) -> Path:
    """A random tiny Llama (SmolLM2 layout: tied embeddings) saved by transformers, with tokenizer files.

    A larger ``initializer_range`` gives the frozen (tied) embeddings enough scale for adapters
    alone to move the loss, as a pretrained model's do. ``config`` overrides `TINY` (a ``vocab_size``).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY, **config}, initializer_range=initializer_range)).float()
    model.save_pretrained(
        folder, safe_serialization=True, **({"max_shard_size": max_shard_size} if max_shard_size else {})
    )
    for name in ("tokenizer.json", "tokenizer_config.json") if with_tokenizer else ():
        shutil.copy(smollm2_dir() / name, folder / name)
    return folder


def tiny_checkpoint_fixture(initializer_range: float = 0.02):
    """A module-scoped ``ckpt`` fixture (``ckpt = tiny_checkpoint_fixture()`` in a test module): the tiny
    checkpoint of `make_hf_checkpoint`, made once per module."""

    @pytest.fixture(scope="module")
    def ckpt(tmp_path_factory) -> Path:
        return make_hf_checkpoint(tmp_path_factory.mktemp("hf_tiny"), initializer_range=initializer_range)

    return ckpt


def model_node(lora: dict | None = None) -> dict:
    """The ``model`` node of TINY (the component builder's arguments from its config.json keys)."""
    dims = builder_kwargs_from_hf_config(TINY, "SMOLLM2")
    if lora is None:
        return dims
    return {**dims, "_component_": "tuner.models.smollm2.lora_smollm2", **lora}


def checkpointer_node(
    ckpt: Path, out: Path | None = None, files: Sequence[str] | None = ("model.safetensors",)
) -> dict:
    """The HF checkpointer node that reads ``files`` of the tiny checkpoint ``ckpt`` (all of its weight
    files when None) and writes to ``out`` when given."""
    node = {
        "_component_": "tuner.checkpoint.HFCheckpointer",
        "checkpoint_dir": str(ckpt),
        "checkpoint_files": None if files is None else list(files),
        "model_type": "SMOLLM2",
    }
    return node if out is None else {**node, "output_dir": str(out)}


def optimizer_node(lr: float, name: str = "AdamW") -> dict:
    """A ``torch.optim.<name>`` node with learning rate ``lr`` (the optimizer's other defaults)."""
    return {"_component_": f"torch.optim.{name}", "lr": lr}


def alpaca_node() -> dict:
    """tuner's quickstart instruction rows as an alpaca dataset node."""
    return {
        "_component_": "tuner.datasets.alpaca_dataset",
        "source": "json",
        "data_files": str(ALPACA),
        "train_on_input": False,
        "split": "train",
    }


def write_config(path: Path, ckpt: Path, out: Path, *, lora: dict | None = None, **overrides) -> Path:
    """A complete recipe config for the tiny checkpoint; ``overrides`` replace top-level keys."""
    cfg = {
        "output_dir": str(out),
        "model": model_node(lora),
        "tokenizer": {
            "_component_": "tuner.models.smollm2.smollm2_tokenizer",
            "path": str(ckpt / "tokenizer.json"),
            "max_seq_len": 96,
        },
        "checkpointer": checkpointer_node(ckpt, out),
        "resume_from_checkpoint": False,
        "dataset": alpaca_node(),
        "seed": 1234,
        "shuffle": False,
        "batch_size": 4,
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 2e-3, "weight_decay": 0.01},
        "lr_scheduler": {
            "_component_": "tuner.training.lr_schedulers.get_cosine_schedule_with_warmup",
            "num_warmup_steps": 2,
        },
        "loss": {"_component_": "tuner.training.loss.ChunkedCrossEntropyLoss", "num_output_chunks": 4},
        "epochs": 1,
        "max_steps_per_epoch": 6,
        "gradient_accumulation_steps": 1,
        "clip_grad_norm": None,
        "device": "cpu",
        "dtype": "fp32",
        "metric_logger": {
            "_component_": "tuner.training.metric_logging.JsonLinesLogger",
            "log_dir": str(out / "logs"),
            "filename": "log.jsonl",
        },
        "log_every_n_steps": 1,
        "progress_bar": False,
    }
    cfg.update(overrides)
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path


def shipped_quickstart_args(variant: str, ckpt: Path, out: Path) -> list[str]:
    """`tune run` arguments for the shipped ``smollm2/135M_<variant>_cpu`` with only the model's size, the
    checkpoint, the data and the output overridden (two steps of batch 2, no sample generation)."""
    dims = {k: v for k, v in model_node().items() if k != "_component_"}
    return [
        "run",
        "lora_finetune_single_device",
        "--config",
        f"smollm2/135M_{variant}_cpu",
        "model._component_=tuner.models.smollm2.lora_smollm2",
        *(f"model.{k}={v}" for k, v in dims.items()),
        f"checkpointer.checkpoint_dir={ckpt}",
        f"tokenizer.path={ckpt / 'tokenizer.json'}",
        "dataset._component_=tuner.datasets.alpaca_dataset",
        "dataset.source=json",
        f"dataset.data_files={ALPACA}",
        f"output_dir={out}",
        "max_steps_per_epoch=2",
        "batch_size=2",
        "~sample_generation",
        "progress_bar=False",
    ]


def train_in_process(path: Path, ckpt: Path, out: Path, *, method=None, **config):
    """Write a recipe config at ``path`` (`write_config`'s arguments) and run a training recipe's `Trainer`
    on it in this process to its end (LoRA unless ``method`` is given); returns the trainer."""
    from tuner.config import load_config
    from tuner.training.lora import LoRAFinetune
    from tuner.training.trainer import Trainer

    trainer = Trainer(load_config(write_config(path, ckpt, out, **config)), method or LoRAFinetune())
    trainer.setup()
    trainer.train()
    trainer.close()
    return trainer


def tune(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `tune` CLI in a subprocess (the way users run it)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tuner.cli.main", *args], capture_output=True, text=True, cwd=ROOT, **kwargs
    )
    return _checked(proc, args, check)


def _checked(proc: subprocess.CompletedProcess, args: tuple[str, ...], check: bool) -> subprocess.CompletedProcess:
    """``proc`` as it is, or, when ``check`` and it failed, an AssertionError with the end of its output."""
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tune {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def tune_in_process(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`tune` through its entry point (`tuner.cli.main.main`, what the console script calls) in this
    process, its stdout and stderr captured: the same command line, exit code, output and files as
    `tune` in a subprocess, without the ~5 s of CPU a new Python process spends importing torch,
    datasets and torch._dynamo again before it starts. For single-process runs whose subject is the
    recipe, not the process (torchrun launches and killed runs stay in subprocesses)."""
    import contextlib
    import io

    from tuner.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return _checked(subprocess.CompletedProcess(["tune", *args], code, out.getvalue(), err.getvalue()), args, check)


def logged_losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "logs" / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _final_weights(out: Path, adapter: bool) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from tuner.checkpoint import latest_checkpoint

    _, folder = latest_checkpoint(out)  # complete ones only
    return load_file(folder / "adapter" / "adapter_model.safetensors" if adapter else folder / "model.safetensors")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    """Wait until every pid has exited (gone, or a zombie that can no longer write)."""
    import time

    deadline = time.time() + timeout
    for pid in pids:
        while time.time() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.01)
    assert time.time() < deadline, f"processes {pids} still run after SIGKILL"


def assert_kill_and_resume_exact(
    recipe: str,
    ckpt: Path,
    tmp_path: Path,
    lora: dict | None = None,
    adapter: bool = False,
    launcher: tuple[str, ...] = (),
    batch_size: int = 4,
    before_resume=None,
    **config,
) -> subprocess.CompletedProcess:
    """Run straight through; run again, SIGKILL it once its first checkpoint exists, resume:
    the final weights are bitwise equal and the logged losses are the same.

    ``before_resume(output_dir)`` may alter the killed run's folder first; ``config`` overrides more
    top-level keys (a dataset, a loss); returns the resume run."""
    import os
    import signal
    import time

    from tuner.checkpoint import latest_checkpoint

    kw = dict(
        max_steps_per_epoch=5,
        epochs=2,
        save_every_n_steps=2,
        shuffle=True,
        batch_size=batch_size,
        optimizer=optimizer_node(1e-3),
        **config,
    )
    straight_out, resumed_out = tmp_path / "straight", tmp_path / "resumed"
    straight = write_config(tmp_path / "a.yaml", ckpt, straight_out, lora=lora, **kw)
    resumed = write_config(tmp_path / "b.yaml", ckpt, resumed_out, lora=lora, **kw)
    # The run that is killed is a process of its own; on one device the straight run and the resume
    # run in this process (torchrun launches stay subprocesses).
    run = tune if launcher else tune_in_process
    run("run", *launcher, recipe, "--config", str(straight))

    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli.main", "run", *launcher, recipe, "--config", str(resumed)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while latest_checkpoint(resumed_out) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    # Killed, not returned: mid-step or mid-save. torchrun starts each worker in a session of its
    # own, so the whole process tree is killed (as when a machine dies), not only the launcher.
    tree = _process_tree(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    _wait_gone(tree)
    assert latest_checkpoint(resumed_out) is not None
    if before_resume is not None:
        before_resume(resumed_out)
    killed_at = latest_checkpoint(resumed_out)[0]
    again = run("run", *launcher, recipe, "--config", str(resumed), "resume_from_checkpoint=True")
    assert f"resuming at step {killed_at}" in again.stdout, again.stdout[-2000:]

    a, b = _final_weights(straight_out, adapter), _final_weights(resumed_out, adapter)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = logged_losses(straight_out), logged_losses(resumed_out)
    assert max(la) == max(lb) == 10
    for step in lb:
        assert la[step] == lb[step], (step, la[step], lb[step])
    return again
