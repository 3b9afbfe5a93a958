"""The same torchtune LoRA config, tiny, through torchtune 0.6.1 and through tuner: first-step losses.

    python scripts/torchtune_first_step.py --torchtune-python /work/wt/tt-venv/bin/python

torchtune's own recipe (``recipes/lora_finetune_single_device.py`` of the installed wheel) runs its
shipped ``llama3_2/1B_lora_single_device.yaml`` in a separate interpreter (a venv with torchtune
0.6.1: its torchao would break peft in tuner's); tuner runs the same file with ``torchtune.`` renamed
to ``tuner.`` (``tune run`` in this process). Both get the same overrides, which only shrink the run:

- the model: ``lora_llama3_2`` with 2 layers, dim 64 (the config's LoRA keys kept), filled from one
  random HF checkpoint written here (weights drawn with std 0.2, so the loss depends on them and on
  the tokens; torchtune's LoRA B starts at zero, so the first loss is the base model's);
- the tokenizer: a llama3-style tiktoken ranks file of 128,000 entries (benchmarks.torchtune_side),
  ``max_seq_len=128``;
- the data: tuner's quickstart instruction rows (``tuner/data/quickstart/train.json``, alpaca columns)
  through the config's own alpaca dataset builder with ``source=json``; the config's shuffle and
  gradient accumulation (8) kept, ``batch_size=2``, ``seed=0`` (torchtune's sampler always shuffles
  with seed 0; tuner's uses ``seed``);
- ``device=cpu dtype=fp32``, one step.

Prints both step-1 losses (each the mean over the step's 8 micro-batches' label tokens, as both log
it) and their difference; exits 1 when it exceeds ``--tolerance`` (1e-4).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.torchtune_side import find_torchtune, parse_step_lines, write_hf_checkpoint, write_tiktoken_ranks  # noqa: E402
from tuner.data.quickstart import TRAIN_FILE as ALPACA  # noqa: E402

CONFIG = "llama3_2/1B_lora_single_device"
DIMS = dict(
    vocab_size=128_256, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128, max_seq_len=256
)


def write_checkpoint(folder: Path, seed: int = 0) -> None:
    """A random Llama 3.2-shaped HF checkpoint of DIMS (tied embeddings), through tuner's HF writer."""
    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.models.llama3_2 import llama3_2

    torch.manual_seed(seed)
    model = llama3_2(**DIMS)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.ndim == 1 else 0.2 * torch.randn_like(p))
    config = hf_config_from_model(model, "LLAMA3_2", bos_token_id=128_000, eos_token_id=128_001)
    config["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    write_hf_checkpoint(folder, config, "LLAMA3_2", model.state_dict(), dtype=torch.float32)


def overrides(work: Path, side: str, prefix: str) -> list[str]:
    out = work / side
    return [
        f"output_dir={out}",
        f"model._component_={prefix}.models.llama3_2.lora_llama3_2",
        *(f"model.{k}={v}" for k, v in DIMS.items()),
        f"tokenizer.path={work / 'tokenizer.model'}",
        "tokenizer.max_seq_len=128",
        f"checkpointer.checkpoint_dir={work / 'model'}",
        "checkpointer.checkpoint_files=[model.safetensors]",
        "dataset.source=json",
        f"dataset.data_files={ALPACA}",
        "dataset.split=train",
        "batch_size=2",
        "max_steps_per_epoch=1",
        "seed=0",
        "device=cpu",
        "dtype=fp32",
        f"metric_logger.log_dir={out / 'logs'}",
        "log_every_n_steps=1",
    ]


def torchtune_loss(python: str, work: Path) -> float:
    site, version = find_torchtune(python)
    if not version.startswith("0.6.1"):
        print(f"warning: torchtune {version}, not 0.6.1", file=sys.stderr)
    argv = [
        python,
        str(site / "recipes" / "lora_finetune_single_device.py"),
        "--config",
        str(site / "recipes" / "configs" / f"{CONFIG}.yaml"),
        *overrides(work, "torchtune", "torchtune"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(work / "hf_cache"))
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=work, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"torchtune failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    rows = [r for f in sorted((work / "torchtune" / "logs").glob("*.txt")) for r in parse_step_lines(f.read_text())]
    return next(r["loss"] for r in rows if r["step"] == 1)


def tuner_loss(python_site_config: Path, work: Path) -> float:
    from tuner.cli.run import run_recipe

    renamed = work / "tuner_config.yaml"
    renamed.write_text(re.sub(r"torchtune\.", "tuner.", python_site_config.read_text()))
    code = run_recipe(["lora_finetune_single_device", "--config", str(renamed), *overrides(work, "tuner", "tuner")])
    if code:
        raise SystemExit(f"tuner failed ({code})")
    # the config's DiskLogger writes torchtune's text lines in tuner too
    rows = [r for f in sorted((work / "tuner" / "logs").glob("*.txt")) for r in parse_step_lines(f.read_text())]
    return next(r["loss"] for r in rows if r.get("step") == 1 and "loss" in r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchtune-python", required=True, help="a Python with torchtune 0.6.1 installed")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the inputs and both runs go (default: a temp dir)"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tt_first_step_"))
    work.mkdir(parents=True, exist_ok=True)
    write_checkpoint(work / "model")
    write_tiktoken_ranks(work / "tokenizer.model")
    site, _ = find_torchtune(args.torchtune_python)
    tt = torchtune_loss(args.torchtune_python, work)
    tu = tuner_loss(site / "recipes" / "configs" / f"{CONFIG}.yaml", work)
    diff = abs(tt - tu)
    print(f"config {CONFIG} (tiny: {DIMS})")
    print(f"torchtune 0.6.1 first-step loss: {tt!r}")
    print(f"tuner first-step loss:           {tu!r}")
    print(f"difference:                      {diff:.2e} (tolerance {args.tolerance:g})")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
