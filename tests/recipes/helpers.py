"""Tiny real checkpoints and configs for recipe tests: a random SmolLM2-shaped HF model with the
real SmolLM2 tokenizer, trained on the real Alpaca seed tasks in ../shared/data."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
TOKENIZER_DIR = SHARED / "tokenizers" / "smollm2"
ALPACA = SHARED / "alpaca_seed_tasks.json"

TINY = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rope_theta=100000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


def make_hf_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random tiny Llama (SmolLM2 layout: tied embeddings) saved by transformers, with tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY)).float()
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    return folder


def model_node(lora: dict | None = None) -> dict:
    dims = dict(vocab_size=TINY["vocab_size"], num_layers=TINY["num_hidden_layers"], num_heads=TINY["num_attention_heads"],
                num_kv_heads=TINY["num_key_value_heads"], embed_dim=TINY["hidden_size"],
                intermediate_dim=TINY["intermediate_size"], max_seq_len=512, rope_base=TINY["rope_theta"],
                norm_eps=TINY["rms_norm_eps"])
    if lora is None:
        return {"_component_": "tuner.models.smollm2.smollm2", **dims}
    return {"_component_": "tuner.models.smollm2.lora_smollm2", **dims, **lora}


def write_config(path: Path, ckpt: Path, out: Path, *, lora: dict | None = None, **overrides) -> Path:
    """A complete recipe config for the tiny checkpoint; ``overrides`` replace top-level keys."""
    cfg = {
        "output_dir": str(out),
        "model": model_node(lora),
        "tokenizer": {"_component_": "tuner.models.smollm2.smollm2_tokenizer", "path": str(ckpt / "tokenizer.json"), "max_seq_len": 96},
        "checkpointer": {"_component_": "tuner.checkpoint.HFCheckpointer", "checkpoint_dir": str(ckpt),
                         "checkpoint_files": ["model.safetensors"], "model_type": "SMOLLM2", "output_dir": str(out)},
        "resume_from_checkpoint": False,
        "dataset": {"_component_": "tuner.datasets.alpaca_dataset", "source": "json", "data_files": str(ALPACA),
                    "train_on_input": False, "split": "train"},
        "seed": 1234,
        "shuffle": False,
        "batch_size": 4,
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 2e-3, "weight_decay": 0.01},
        "lr_scheduler": {"_component_": "tuner.training.lr_schedulers.get_cosine_schedule_with_warmup", "num_warmup_steps": 2},
        "loss": {"_component_": "tuner.training.loss.ChunkedCrossEntropyLoss", "num_output_chunks": 4},
        "epochs": 1,
        "max_steps_per_epoch": 6,
        "gradient_accumulation_steps": 1,
        "clip_grad_norm": None,
        "device": "cpu",
        "dtype": "fp32",
        "metric_logger": {"_component_": "tuner.training.metric_logging.DiskLogger", "log_dir": str(out / "logs"), "filename": "log.jsonl"},
        "log_every_n_steps": 1,
        "progress_bar": False,
    }
    cfg.update(overrides)
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path


def tune(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `tune` CLI in a subprocess (the way users run it)."""
    proc = subprocess.run([sys.executable, "-m", "tuner.cli.main", *args], capture_output=True, text=True, cwd=ROOT, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"tune {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def logged_losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "logs" / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}
