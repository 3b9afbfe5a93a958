"""Time a recipe config on random-init weights of its model's shape and print JSON.

    python scripts/benchmark.py --workload lora_1b            # Llama-3.2-1B shape, LoRA, 4 x 2048
    python scripts/benchmark.py --workload qlora_8b           # Llama-3.1-8B shape, QLoRA, 2 x 2048
    python scripts/benchmark.py --workload full_1b            # Llama-3.2-1B shape, full, 4 x 2048
    python scripts/benchmark.py --workload lora_1b compile=True enable_activation_checkpointing=False

The recipe's own Trainer runs the shipped config with synthetic token data (every sequence exactly
``--seq-len`` tokens), random weights (no download) and no checkpoint saving. Reported: median
tokens/s over the steps after ``--warmup``, peak allocated / reserved GPU memory over the whole run,
and MFU against a bf16 matmul rate measured in the same process (the anchor figures' method,
docs/benchmarks.md).

``--compare-hf`` then runs the same workload as a plain HF transformers (+ peft) loop in the same
process (the anchor figures' baseline: sdpa, fused AdamW; LoRA on the same modules with the same
rank; for QLoRA, a bf16 base with gradient checkpointing, as the anchor figures measured it), starting
from the same weights where they are dense, and prints both results and their ratios.

``--compare-torchtune`` then runs torchtune 0.6.1's own recipe for the workload (its shipped config,
``torch.compile`` on by default: ``--torchtune-compile on|off|both``) in a subprocess on an HF
checkpoint written from the weights tuner started from (QLoRA: dense random bf16 weights of the
shape), a synthetic llama3 tiktoken file and synthetic text cut to exactly ``--seq-len`` tokens,
with the same batch size, steps, warm-up and seed (``benchmarks/torchtune_side.py``). Its median
tokens/s and peak memory (from its own log lines) and the ratios tuner / torchtune are added.
With ``--packed``, torchtune packs (its ``dataset.packed=True``, packs of ``--seq-len``) documents
of the lengths tuner's packed data has; its tokens/s, which leaves padding out, is converted to
positions/s as tuner counts (the entry's ``tokens_counted``).
torchtune must be importable with $TORCHTUNE_PYTHONPATH (or ``--torchtune-path``) in front of PYTHONPATH,
a path for the subprocess alone (``scripts/device_setup.sh``): its torchao 0.11 would make peft refuse
to build the HF baseline's LoRA layers in this process.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
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


HF_NAMES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
HF_MLP = ["gate_proj", "up_proj", "down_proj"]
MODEL_TYPES = {"lora_1b": "LLAMA3_2", "full_1b": "LLAMA3_2", "qlora_8b": "LLAMA3"}


def _peak_gib(device: str) -> tuple[float | None, float | None]:
    import torch

    if device != "cuda":
        return None, None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2), round(torch.cuda.max_memory_reserved() / 2**30, 2)


def run_hf(workload: str, tuner_result: dict, trainer, initial_state: dict | None, device: str) -> dict:
    """The same workload as a plain transformers (+ peft) training loop over the same batches."""
    import time

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.checkpoint.hf_keys import tuner_to_hf

    model_type = MODEL_TYPES[workload]
    hf_dict = hf_config_from_model(trainer.decoder, model_type)
    config = AutoConfig.for_model(
        **{k: v for k, v in hf_dict.items() if k not in ("architectures", "torch_dtype", "dtype")}
    )
    config._attn_implementation = "sdpa"
    dtype = trainer.param_dtype
    _release(trainer)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config).to(dtype)
    if initial_state is not None:
        model.load_state_dict(tuner_to_hf(initial_state, model_type, hf_dict), strict=False)
    lora = tuner_result["lora"]
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        if lora["checkpointing"]:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        targets = [HF_NAMES[m] for m in lora["attn_modules"]] + (HF_MLP if lora["mlp"] else [])
        model = get_peft_model(
            model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], target_modules=targets, lora_dropout=0.0)
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tuner_result["lr"], fused=device == "cuda")
    batch, seq = tuner_result["batch_size"], tuner_result["seq_len"]
    losses, times = [], []
    for step in range(tuner_result["steps"]):
        ids = torch.tensor([tuner_result["dataset"][step * batch + i]["tokens"] for i in range(batch)], device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t)
    peak_alloc, peak_reserved = _peak_gib(device)
    tps = statistics.median(batch * seq / t for t in times[tuner_result["warmup_steps"] :])
    return {
        "tool": "hf-transformers" + ("+peft" if lora else ""),
        "tokens_per_s_median": round(tps, 1),
        "peak_alloc_gib": peak_alloc,
        "peak_reserved_gib": peak_reserved,
        "first_loss": losses[0],
    }


def kernel_summary(trace_dir: str, top: int = 25) -> dict:
    """GPU time per kernel name and GPU idle time (blamed on CPU ops) over the traced steps,
    from the profiler's Chrome trace (`benchmarks.trace`)."""
    import gzip

    from benchmarks.trace import idle_gaps
    from benchmarks.trace import kernel_summary as summarise

    # The profiler writes iteration_<step>/<worker>.pt.trace.json.gz (tuner.training.profiler).
    traces = sorted(Path(trace_dir).rglob("*.pt.trace.json*"), key=lambda p: p.stat().st_mtime)
    if not traces:
        return {"error": f"no trace in {trace_dir}"}
    raw = traces[-1].read_bytes()
    events = json.loads(gzip.decompress(raw) if traces[-1].suffix == ".gz" else raw).get("traceEvents", [])
    return {**summarise(events, top), "idle": idle_gaps(events)}


def _memory_peak(path: str) -> dict:
    """Stop recording allocations, keep the snapshot at `path` (for PyTorch's memory viz) and say
    what was alive at the peak (`benchmarks.memory_peak`)."""
    import pickle

    import torch

    from benchmarks.memory_peak import peak_composition

    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(pickle.dumps(snapshot))
    return peak_composition(snapshot, device=torch.cuda.current_device())


def _release(trainer) -> None:
    """Drop what the finished tuner run holds on the GPU, for the HF baseline or a torchtune subprocess."""
    import torch

    for name in ("model", "optimizer", "lr_scheduler", "decoder", "loss_fn"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_torchtune_side(
    workload: str,
    result: dict,
    hf_config: dict,
    initial_state: dict | None,
    device: str,
    site: Path,
    version: str,
    compile_mode: str,
    overrides: list[str],
    tt_overrides: list[str],
    timeout: float,
    workdir: str | None,
    env: dict,
    packed: dict | None = None,
) -> None:
    """torchtune's recipe on the same workload, once per compile mode; adds its entries and the
    ratios tuner / torchtune to ``result`` (keys ``torchtune`` and, with ``both``, ``torchtune_eager``).
    ``packed``: ``{"min_len", "seed"}`` of tuner's packed synthetic data; torchtune then packs
    documents of the same lengths itself, and its tokens/s is converted to tuner's count."""
    from benchmarks import torchtune_side as tt

    recipe, config = tt.RECIPES[workload]
    seq_len, batch, steps = result["seq_len"], result["batch_size"], result["steps"]
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"bench_tt_{workload}_"))
    try:
        doc_lengths = count = None
        if packed is not None:  # all packs are built before training: steps + 2 batches of them, no more
            doc_lengths = tt.packed_document_lengths(seq_len, packed["min_len"], batch * (steps + 2), packed["seed"])
            packs = tt.pack_documents(doc_lengths, seq_len)
            count = {
                "positions_per_step": batch * seq_len,
                "counted_per_step": tt.counted_tokens_per_step(packs, batch),
            }
        assets = tt.write_assets(
            work / "assets",
            hf_config,
            MODEL_TYPES[workload],
            initial_state,
            seq_len,
            num_samples=batch * (steps + 2),
            device=device,
            doc_lengths=doc_lengths,
        )
        modes = {"on": [True], "off": [False], "both": [True, False]}[compile_mode]
        for i, compiled in enumerate(modes):
            key = "torchtune" if i == 0 else "torchtune_eager"
            out = work / ("run_compile" if compiled else "run_eager")
            shutil.rmtree(out, ignore_errors=True)
            argv = tt.torchtune_command(
                site,
                workload,
                assets,
                out,
                seq_len=seq_len,
                batch_size=batch,
                steps=steps,
                compile=compiled,
                device=device,
                packed=packed is not None,
                overrides=tt.forwarded_overrides(overrides) + list(tt_overrides),
            )
            entry = {
                "tool": f"torchtune-{version}",
                "recipe": recipe,
                "config": config,
                "compile": compiled,
                **({"documents": len(doc_lengths), "packs": len(packs)} if packed is not None else {}),
                **tt.run_torchtune(argv, out, result["warmup_steps"], timeout, env=env, **(count or {})),
            }
            if not workdir:
                entry.pop("log", None)  # the temporary folder goes away
            result[key] = entry
            if entry.get("tokens_per_s_median"):
                result[f"ratio_tokens_per_s_{key}"] = round(
                    result["tokens_per_s_median"] / entry["tokens_per_s_median"], 3
                )
            if result["peak_alloc_gib"] is not None and entry.get("peak_alloc_gib"):
                result[f"ratio_peak_alloc_{key}"] = round(result["peak_alloc_gib"] / entry["peak_alloc_gib"], 3)
    finally:
        if not workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(
    workload: str,
    steps: int,
    warmup: int,
    seq_len: int,
    batch_size: int | None,
    overrides: list[str],
    device: str = "cuda",
    compare_hf: bool = False,
    packed: bool = False,
    profile: str | None = None,
    memory_snapshot: str | None = None,
    compare_torchtune: bool = False,
    torchtune_compile: str = "on",
    torchtune_overrides: list[str] | None = None,
    torchtune_timeout: float = 600,
    torchtune_dir: str | None = None,
    torchtune_path: str | None = None,
) -> dict:
    import torch

    from benchmarks import matmul_tflops, training_flops_per_token
    from tuner.config import apply_overrides, load_config
    from tuner.registry import resolve_config
    from tuner.training.full import FullFinetune
    from tuner.training.lora import LoRAFinetune
    from tuner.training.trainer import Trainer

    config_name, method, default_batch, extra = WORKLOADS[workload]
    batch = batch_size or default_batch
    out = Path(tempfile.mkdtemp(prefix=f"bench_{workload}_"))
    cfg = load_config(resolve_config(config_name))
    vocab = 128_256
    apply_overrides(
        cfg,
        [
            f"output_dir={out}",
            "~checkpointer",
            "~tokenizer",
            "~dataset",
            "~metric_logger",
            "checkpointer={_component_: benchmarks.RandomInitCheckpointer}",
            "tokenizer={_component_: benchmarks.NullTokenizer}",
            f"dataset={{_component_: benchmarks.synthetic_dataset, seq_len: {seq_len}, "
            f"num_samples: {batch * (steps + 1)}, vocab_size: {vocab}}}",
            f"batch_size={batch}",
            "gradient_accumulation_steps=1",
            "epochs=1",
            f"max_steps_per_epoch={steps}",
            "shuffle=False",
            "log_every_n_steps=1",
            "progress_bar=False",
            "save_every_n_steps=null",
            "metric_logger={_component_: tuner.training.metric_logging.DiskLogger, "
            f"log_dir: {out}, filename: log.jsonl}}",
            f"device={device}",
            "dtype=bf16",
            "seed=0",
            *extra,
            *overrides,
        ],
    )
    if "lora" in workload:
        cfg.save_adapter_weights_only = True  # nothing is written; skip building a merged copy
    cfg.dataset.vocab_size = int(cfg.model.get("vocab_size", vocab))  # a shape override may shrink the vocabulary
    if packed:  # documents of 1/8 to all of seq_len tokens, packed with document masks
        cfg.dataset.packed, cfg.dataset.min_len = True, max(1, seq_len // 8)
        cfg.dataset.num_samples = int(cfg.dataset.num_samples) * 2
    if profile:  # two steps after warm-up, traced; summarised by `kernel_summary`
        cfg.profiler = {
            "enabled": True,
            "output_dir": profile,
            "wait_steps": warmup,
            "warmup_steps": 1,
            "active_steps": 2,
            "record_shapes": False,
        }
    if compare_hf and packed:
        raise SystemExit("--compare-hf compares unpacked workloads only (the HF baseline has no packing)")
    if compare_torchtune:  # fail before minutes of tuner training if torchtune cannot run
        from benchmarks import torchtune_side as tt
        from tuner.errors import UsageError

        order_keys = {
            "shuffle",
            "gradient_accumulation_steps",
            "batch_size",
            "dataset.packed",
            "dataset.split_across_pack",
        }
        fixed = sorted({o.split("=", 1)[0].strip() for o in torchtune_overrides or []} & order_keys)
        if packed and fixed:
            raise UsageError(
                f"--packed --compare-torchtune sets torchtune's {', '.join(fixed)} itself: its packed tokens/s "
                "is converted step by step, assuming step k trains on tuner's packs of step k",
                f"drop --torchtune-override {' '.join(f + '=...' for f in fixed)}",
            )
        tt.check_vocab_size(int(cfg.model.get("vocab_size", tt.LLAMA3_VOCAB)))
        tt_env = tt.torchtune_env(torchtune_path)
        tt_site, tt_version = tt.find_torchtune(
            env=tt_env, also_import=("bitsandbytes",) if workload == "full_1b" else ()
        )
    peak_tflops = matmul_tflops() if device == "cuda" else None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if memory_snapshot and device == "cuda":  # from before the model exists, so the peak's blocks are all named
        # context="alloc": recording free-time stacks as well crashed a compiled QLoRA step (torch 2.11)
        torch.cuda.memory._record_memory_history(max_entries=2_000_000, context="alloc", stacks="python")
    trainer = Trainer(cfg, LoRAFinetune() if method == "lora" else FullFinetune())
    trainer.setup()
    setup_alloc = round(torch.cuda.memory_allocated() / 2**30, 2) if device == "cuda" else None
    dense = not any(n.endswith("weight_nf4") for n, _ in trainer.decoder.named_buffers())
    keep_initial = (compare_hf or compare_torchtune) and dense
    initial_state = (
        {k: v.detach().cpu().clone() for k, v in trainer.decoder.state_dict().items()} if keep_initial else None
    )
    try:
        trainer.train()
    finally:
        trainer.close()
    memory_at_peak = _memory_peak(memory_snapshot) if memory_snapshot and device == "cuda" else None
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steady = [r["tokens_per_second_per_gpu"] for r in rows if r["step"] > warmup]
    tps = statistics.median(steady)
    flops = training_flops_per_token(trainer.decoder, seq_len, full=method == "full")
    peak_alloc, peak_reserved = _peak_gib(device)
    result = {
        "workload": workload + ("_packed" if packed else ""),
        "config": config_name,
        "overrides": overrides,
        "batch_size": batch,
        "seq_len": seq_len,
        "steps": steps,
        "warmup_steps": warmup,
        "tokens_per_s_median": round(tps, 1),
        "peak_alloc_gib": peak_alloc,
        "peak_reserved_gib": peak_reserved,
        "setup_alloc_gib": setup_alloc,
        "matmul_tflops": round(peak_tflops, 1) if peak_tflops else None,
        "mfu": round(tps * flops / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "first_loss": rows[0]["loss"],
        "final_loss": rows[-1]["loss"],
        "tokens_per_s_steps": [round(r["tokens_per_second_per_gpu"]) for r in rows],
        # seconds the loop waited for each step's GPU work, read a step later: ~0 means launch-bound
        "wait_for_gpu_s_steps": [round(r["wait_for_gpu_s"], 4) for r in rows if "wait_for_gpu_s" in r],
        "device": torch.cuda.get_device_name() if device == "cuda" else device,
        "torch": torch.__version__,
    }
    if profile:
        result["profile"] = kernel_summary(profile)
    if memory_at_peak:
        result["memory_at_peak"] = memory_at_peak
    if compare_torchtune:
        from tuner.checkpoint.hf_config import hf_config_from_model

        tt_hf_config = hf_config_from_model(trainer.decoder, MODEL_TYPES[workload])
    if compare_hf:
        _compare_hf(workload, result, cfg, method, trainer, initial_state, device)
    if compare_torchtune:
        _release(trainer)
        run_torchtune_side(
            workload,
            result,
            tt_hf_config,
            initial_state,
            device,
            tt_site,
            tt_version,
            torchtune_compile,
            overrides,
            list(torchtune_overrides or []),
            torchtune_timeout,
            torchtune_dir,
            tt_env,
            packed={"min_len": int(cfg.dataset.min_len), "seed": int(cfg.dataset.get("seed", 0))} if packed else None,
        )
    return result


def _compare_hf(
    workload: str, result: dict, cfg, method: str, trainer, initial_state: dict | None, device: str
) -> None:
    tps, peak_alloc = result["tokens_per_s_median"], result["peak_alloc_gib"]
    model_cfg = cfg.model
    lora = (
        None
        if method == "full"
        else {
            "attn_modules": list(model_cfg.lora_attn_modules),
            "mlp": bool(model_cfg.get("apply_lora_to_mlp", False)),
            "rank": int(model_cfg.lora_rank),
            "alpha": float(model_cfg.lora_alpha),
            "checkpointing": bool(cfg.get("enable_activation_checkpointing", False)),
        }
    )
    spec = {**result, "lora": lora, "lr": float(cfg.optimizer.lr), "dataset": trainer.dataloader.dataset}
    hf = run_hf(workload, spec, trainer, initial_state, device)
    result["hf"] = hf
    result["ratio_tokens_per_s"] = round(tps / hf["tokens_per_s_median"], 3)
    if peak_alloc is not None:
        result["ratio_peak_alloc"] = round(peak_alloc / hf["peak_alloc_gib"], 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--device", default="cuda", help="cuda (numbers to report) or cpu (a quick check of the harness)"
    )
    parser.add_argument(
        "--compare-hf", action="store_true", help="also run the HF transformers (+ peft) baseline in this process"
    )
    parser.add_argument(
        "--packed", action="store_true", help="variable-length documents packed into seq_len with document masks"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="trace two steps after warm-up into DIR and add a GPU-kernel summary"
    )
    parser.add_argument(
        "--memory-snapshot",
        metavar="FILE",
        help="record every GPU allocation of the run, keep the snapshot in FILE (pytorch.org/memory_viz) "
        "and add what was alive at the peak, by call site (slows the run: not for timing)",
    )
    parser.add_argument(
        "--compare-torchtune",
        action="store_true",
        help="also run torchtune 0.6.1's recipe on the same workload (subprocess; torchtune on PYTHONPATH)",
    )
    parser.add_argument(
        "--torchtune-compile",
        choices=["on", "off", "both"],
        default="on",
        help="torchtune's compile=True (its best setting, default), False, or both runs",
    )
    parser.add_argument(
        "--torchtune-override",
        dest="torchtune_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for torchtune's config only (repeatable); model.* and dtype overrides "
        "of the tuner run are passed on to torchtune as they are (tuner. -> torchtune.)",
    )
    parser.add_argument("--torchtune-timeout", type=float, default=600, help="seconds for each torchtune run")
    parser.add_argument(
        "--torchtune-path",
        metavar="DIRS",
        help="put DIRS in front of PYTHONPATH for torchtune only (default: $TORCHTUNE_PYTHONPATH; "
        "scripts/device_setup.sh installs torchtune's wheels into /tmp/site_tt)",
    )
    parser.add_argument(
        "--torchtune-dir",
        metavar="DIR",
        help="write torchtune's inputs, outputs and logs here and keep them (default: a temporary folder)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)  # every option is named as run's argument it sets
    from tuner.errors import TunerError

    try:
        result = run(**vars(args))
    except TunerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
