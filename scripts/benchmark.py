"""Time a recipe config on random-init weights of its model's shape and print JSON.

    python scripts/benchmark.py --workload lora_1b            # Llama-3.2-1B shape, LoRA, 4 x 2048
    python scripts/benchmark.py --workload qlora_8b           # Llama-3.1-8B shape, QLoRA, 2 x 2048
    python scripts/benchmark.py --workload full_1b            # Llama-3.2-1B shape, full, 4 x 2048
    python scripts/benchmark.py --workload lora_1b compile=True enable_activation_checkpointing=False

The recipe's own Trainer runs the shipped config with synthetic token data (every sequence exactly
``--seq-len`` tokens), random weights (no download) and no checkpoint saving. Reported: median
tokens/s over the steps after ``--warmup``, peak allocated / reserved GPU memory over the whole run,
and MFU against a bf16 matmul rate measured in the same process (ANCHORS.md's method).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKLOADS = {
    # name: (config, recipe, batch size, extra overrides)
    "lora_1b": ("llama3_2/1B_lora_single_device", "lora", 4, []),
    "qlora_8b": ("llama3_1/8B_qlora_single_device", "lora", 2, []),
    "full_1b": ("llama3_2/1B_full_single_device", "full", 4, []),
}


def run(workload: str, steps: int, warmup: int, seq_len: int, batch_size: int | None, overrides: list[str]) -> dict:
    import torch

    from tuner.bench import matmul_tflops, training_flops_per_token
    from tuner.config import apply_overrides, load_config
    from tuner.registry import resolve_config
    from tuner.training.lora import LoRAFinetune
    from tuner.training.trainer import FinetuneMethod, Trainer

    config_name, method, default_batch, extra = WORKLOADS[workload]
    batch = batch_size or default_batch
    out = Path(tempfile.mkdtemp(prefix=f"bench_{workload}_"))
    cfg = load_config(resolve_config(config_name))
    vocab = 128_256
    apply_overrides(cfg, [
        f"output_dir={out}",
        "~checkpointer", "~tokenizer", "~dataset", "~metric_logger",
        "checkpointer={_component_: tuner.bench.RandomInitCheckpointer}",
        "tokenizer={_component_: tuner.bench.NullTokenizer}",
        f"dataset={{_component_: tuner.bench.synthetic_dataset, seq_len: {seq_len}, num_samples: {batch * (steps + 1)}, vocab_size: {vocab}}}",
        f"batch_size={batch}", "gradient_accumulation_steps=1", "epochs=1", f"max_steps_per_epoch={steps}",
        "shuffle=False", "log_every_n_steps=1", "progress_bar=False", "save_every_n_steps=null",
        "save_adapter_weights_only=True",  # nothing is written; skip building a merged copy
        f"metric_logger={{_component_: tuner.training.metric_logging.DiskLogger, log_dir: {out}, filename: log.jsonl}}",
        "device=cuda", "dtype=bf16", "seed=0",
        *extra, *overrides,
    ])
    peak_tflops = matmul_tflops()
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, LoRAFinetune() if method == "lora" else FinetuneMethod())
    trainer.run()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steady = [r["tokens_per_second_per_gpu"] for r in rows if r["step"] > warmup]
    tps = statistics.median(steady)
    flops = training_flops_per_token(trainer.decoder, seq_len, full=method == "full")
    return {
        "workload": workload,
        "config": config_name,
        "overrides": overrides,
        "batch_size": batch,
        "seq_len": seq_len,
        "steps": steps,
        "warmup_steps": warmup,
        "tokens_per_s_median": round(tps, 1),
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "matmul_tflops": round(peak_tflops, 1),
        "mfu": round(tps * flops / (peak_tflops * 1e12), 4),
        "final_loss": rows[-1]["loss"],
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.workload, args.steps, args.warmup, args.seq_len, args.batch_size, args.overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
