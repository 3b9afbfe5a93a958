"""Time a recipe config on random-init weights of its model's shape and print JSON.

    python scripts/benchmark.py --workload lora_1b            # Llama-3.2-1B shape, LoRA, 4 x 2048
    python scripts/benchmark.py --workload qlora_8b           # Llama-3.1-8B shape, QLoRA, 2 x 2048
    python scripts/benchmark.py --workload full_1b            # Llama-3.2-1B shape, full, 4 x 2048
    python scripts/benchmark.py --workload lora_8b_fp8        # Llama-3.1-8B shape, LoRA over an FP8 base, 2 x 2048
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
``torch.compile`` on by default: ``--torchtune-compile on|off|both``) in a subprocess with the same
batch size, steps, warm-up and seed (``benchmarks/torchtune_side.py``). Unpacked, both tools train on
the same learnable token batches from one written random HF checkpoint, tuner's initial adapters and
tuner's hyperparameters (``benchmarks/parity.py``): the per-step losses of both, their largest
difference and, with ``--parity-noise-seed`` or ``both``, torchtune's own run-to-run difference are
added (``loss_parity``). Its median tokens/s and peak memory (from its own log lines) and the ratios
tuner / torchtune are added.
With ``--packed``, torchtune packs (its ``dataset.packed=True``, packs of ``--seq-len``) documents
of the lengths tuner's packed data has; its tokens/s, which leaves padding out, is converted to
positions/s as tuner counts (the entry's ``tokens_counted``).
torchtune must be importable with $TORCHTUNE_PYTHONPATH (or ``--torchtune-path``) in front of PYTHONPATH,
a path for the subprocess alone (``scripts/device_setup.sh``): its torchao 0.11 would make peft refuse
to build the HF baseline's LoRA layers in this process.

``--max-context 16,24,48,80`` (with ``--workload qlora_8b_r32_all``) finds, for each GPU memory cap, the
longest sequence that trains, by bisection over probes that each run in a fresh process capped with
``--memory-cap-gib`` (``benchmarks/max_context.py``).
"""

from __future__ import annotations

import argparse
import functools
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
    # LoRA over an FP8 base (model.base_dtype: fp8) and the bf16 LoRA 8B it is compared with; the 8B
    # runs checkpoint activations as the QLoRA 8B config does, so the three 8B rows differ in the base only
    "lora_1b_fp8": ("llama3_2/1B_lora_single_device", "lora", 4, ["model.base_dtype=fp8"]),
    "qlora_1b": ("llama3_2/1B_qlora_single_device", "lora", 4, []),  # QLoRA quality runs at 1B cost
    "lora_8b": ("llama3_1/8B_lora_single_device", "lora", 2, ["enable_activation_checkpointing=True"]),
    "lora_8b_fp8": (
        "llama3_1/8B_lora_single_device",
        "lora",
        2,
        ["enable_activation_checkpointing=True", "model.base_dtype=fp8"],
    ),
    # unsloth's long-context setup: 8B QLoRA, rank 32 on every linear layer, batch 1 (--max-context)
    "qlora_8b_r32_all": ("llama3_1/8B_qlora_long_context", "lora", 1, []),
}


HF_NAMES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
HF_MLP = ["gate_proj", "up_proj", "down_proj"]
MODEL_TYPES = {
    "lora_1b": "LLAMA3_2",
    "full_1b": "LLAMA3_2",
    "qlora_8b": "LLAMA3",
    "lora_1b_fp8": "LLAMA3_2",
    "qlora_1b": "LLAMA3_2",
    "lora_8b": "LLAMA3",
    "lora_8b_fp8": "LLAMA3",
    "qlora_8b_r32_all": "LLAMA3",
}


def _peak_gib(device: str) -> tuple[float | None, float | None]:
    import torch

    if device != "cuda":
        return None, None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2), round(torch.cuda.max_memory_reserved() / 2**30, 2)


def run_hf(workload: str, tuner_result: dict, trainer, initial_state: dict | None, device: str) -> dict:
    """The same workload as a plain transformers (+ peft) training loop over the same batches."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.timed_steps import timed_steps
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
    times, losses = timed_steps(
        model,
        opt,
        (
            torch.tensor([tuner_result["dataset"][step * batch + i]["tokens"] for i in range(batch)], device=device)
            for step in range(tuner_result["steps"])
        ),
    )
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
    """GPU time per kernel name and per launching CPU op, and GPU idle time (blamed on CPU ops) over the
    traced steps, from the profiler's Chrome trace (`benchmarks.trace`)."""
    import gzip

    from benchmarks.trace import idle_gaps, kernel_launchers
    from benchmarks.trace import kernel_summary as summarise

    # The profiler writes iteration_<step>/<worker>.pt.trace.json.gz (tuner.training.profiler).
    traces = sorted(Path(trace_dir).rglob("*.pt.trace.json*"), key=lambda p: p.stat().st_mtime)
    if not traces:
        return {"error": f"no trace in {trace_dir}"}
    raw = traces[-1].read_bytes()
    events = json.loads(gzip.decompress(raw) if traces[-1].suffix == ".gz" else raw).get("traceEvents", [])
    return {**summarise(events, top), "launchers": kernel_launchers(events), "idle": idle_gaps(events)}


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
    work: Path,
    keep: bool,
    env: dict,
    assets=None,
    packed: dict | None = None,
    noise_seed: int | None = None,
) -> None:
    """torchtune's recipe on the same workload, once per compile mode (and once more with
    ``noise_seed``); adds its entries and the ratios tuner / torchtune to ``result`` (keys
    ``torchtune``, with ``both`` ``torchtune_eager``, with a noise seed ``torchtune_seed<S>``).
    ``assets``: the checkpoint and token batches tuner trained on (loss parity); else ``packed``:
    ``{"min_len", "seed"}`` of tuner's packed synthetic data, and torchtune packs documents of the
    same lengths itself (its tokens/s converted to tuner's count) from tuner's initial weights.
    ``work`` holds torchtune's inputs and outputs; it is removed at the end unless ``keep``."""
    from benchmarks import torchtune_side as tt

    recipe, config = tt.RECIPES[workload]
    seq_len, batch, steps = result["seq_len"], result["batch_size"], result["steps"]
    env = tt.benchmarks_on_path(env)
    try:
        count = None
        if packed is not None:  # all packs are built before training: steps + 2 batches of them, no more
            doc_lengths = tt.packed_document_lengths(seq_len, packed["min_len"], batch * (steps + 2), packed["seed"])
            packs = tt.pack_documents(doc_lengths, seq_len)
            count = {
                "positions_per_step": batch * seq_len,
                "counted_per_step": tt.counted_tokens_per_step(packs, batch),
            }
            assets = tt.write_assets(
                work / "assets", hf_config, MODEL_TYPES[workload], initial_state, device, doc_lengths=doc_lengths
            )
        modes = {"on": [True], "off": [False], "both": [True, False]}[compile_mode]
        runs = [("torchtune" if i == 0 else "torchtune_eager", compiled, 0) for i, compiled in enumerate(modes)]
        if noise_seed is not None:
            runs.append((f"torchtune_seed{noise_seed}", modes[0], noise_seed))
        for key, compiled, seed in runs:
            out = work / (("run_compile" if compiled else "run_eager") + (f"_seed{seed}" if seed else ""))
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
                seed=seed,
                overrides=tt.forwarded_overrides(overrides) + list(tt_overrides),
            )
            entry = {
                "tool": f"torchtune-{version}",
                "recipe": recipe,
                "config": config,
                "compile": compiled,
                "seed": seed,
                **({"documents": len(doc_lengths), "packs": len(packs)} if packed is not None else {}),
                **tt.run_torchtune(argv, out, result["warmup_steps"], timeout, env=env, **(count or {})),
            }
            if not keep:
                entry.pop("log", None)  # the temporary folder goes away
            result[key] = entry
            if entry.get("tokens_per_s_median"):
                result[f"ratio_tokens_per_s_{key}"] = round(
                    result["tokens_per_s_median"] / entry["tokens_per_s_median"], 3
                )
            if result["peak_alloc_gib"] is not None and entry.get("peak_alloc_gib"):
                result[f"ratio_peak_alloc_{key}"] = round(result["peak_alloc_gib"] / entry["peak_alloc_gib"], 3)
    finally:
        if not keep:
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
    parity_noise_seed: int | None = None,
    learnable_data: bool = False,
    memory_cap_gib: float | None = None,
    nf4_exact_weights: bool = False,
) -> dict:
    import torch

    from benchmarks import matmul_tflops, training_flops_per_token
    from benchmarks.max_context import cap_gpu_memory, host_peak_rss_gib
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
            "metric_logger={_component_: tuner.training.metric_logging.JsonLinesLogger, "
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
    if nf4_exact_weights:
        _check_nf4_exact_weights(cfg, workload, compare_torchtune or learnable_data, packed)
    if compare_torchtune:  # fail before minutes of tuner training if torchtune cannot run
        from benchmarks import torchtune_side as tt
        from tuner.errors import UsageError

        if workload not in tt.RECIPES:
            raise UsageError(
                f"--compare-torchtune has no torchtune recipe for --workload {workload}",
                f"use one of {', '.join(sorted(tt.RECIPES))}",
            )

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
        if packed:  # torchtune tokenizes the packed documents itself
            tt.check_vocab_size(int(cfg.model.get("vocab_size", tt.LLAMA3_VOCAB)))
        tt_env = tt.torchtune_env(torchtune_path)
        tt_site, tt_version = tt.find_torchtune(
            env=tt_env, also_import=("bitsandbytes",) if workload == "full_1b" else ()
        )
    if learnable_data and packed:
        from tuner.errors import UsageError

        raise UsageError("--learnable-data is unpacked token batches; --packed packs random documents", "drop one")
    tt_assets = None
    if compare_torchtune or learnable_data:
        tt_work = Path(torchtune_dir) if torchtune_dir else Path(tempfile.mkdtemp(prefix=f"bench_tt_{workload}_"))
        if not packed:  # both tools train on the same learnable batches from the same checkpoint
            tt_assets = _parity_inputs(
                cfg, workload, tt_work, batch * steps, seq_len, device, nf4_exact=nf4_exact_weights
            )
    cap_gpu_memory(memory_cap_gib, device)
    peak_tflops = matmul_tflops() if device == "cuda" else None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if memory_snapshot and device == "cuda":  # from before the model exists, so the peak's blocks are all named
        # context="alloc": recording free-time stacks as well crashed a compiled QLoRA step (torch 2.11)
        torch.cuda.memory._record_memory_history(max_entries=2_000_000, context="alloc", stacks="python")
    trainer = Trainer(cfg, LoRAFinetune() if method == "lora" else FullFinetune())
    trainer.setup()
    setup_alloc = round(torch.cuda.memory_allocated() / 2**30, 2) if device == "cuda" else None
    if tt_assets is not None and method == "lora":
        _write_initial_adapters(trainer, cfg, tt_assets)
    nf4_exact = _nf4_exact_check(trainer, cfg, tt_assets) if nf4_exact_weights and tt_assets is not None else None
    dense = not any(n.endswith(("weight_nf4", "weight_fp8")) for n, _ in trainer.decoder.named_buffers())
    keep_initial = (compare_hf or (compare_torchtune and packed)) and dense
    initial_state = (
        {k: v.detach().cpu().clone() for k, v in trainer.decoder.state_dict().items()} if keep_initial else None
    )
    try:
        trainer.train()
    finally:
        trainer.close()
        if tt_assets is not None and not compare_torchtune and not torchtune_dir:
            shutil.rmtree(tt_work, ignore_errors=True)
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
        "losses": [r["loss"] for r in rows],
        "data": "learnable (benchmarks.parity)" if "parity" in str(cfg.dataset._component_) else "random tokens",
        "weights": "nf4-exact (benchmarks.nf4_exact)" if nf4_exact_weights else "random normal, std 0.02",
        "nf4_exact": nf4_exact,  # tuner's NF4 weights against the checkpoint: 0 entries differing expected
        "tokens_per_s_steps": [round(r["tokens_per_second_per_gpu"]) for r in rows],
        # seconds the loop waited for each step's GPU work, read a step later: ~0 means launch-bound
        "wait_for_gpu_s_steps": [round(r["wait_for_gpu_s"], 4) for r in rows if "wait_for_gpu_s" in r],
        "memory_cap_gib": memory_cap_gib or None,
        "host_peak_rss_gib": host_peak_rss_gib(),  # offloaded activations live in host memory
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
            (tt.parity_overrides(cfg) if tt_assets is not None else []) + list(torchtune_overrides or []),
            torchtune_timeout,
            tt_work,
            bool(torchtune_dir),
            tt_env,
            assets=tt_assets,
            packed={"min_len": int(cfg.dataset.min_len), "seed": int(cfg.dataset.get("seed", 0))} if packed else None,
            noise_seed=parity_noise_seed,
        )
        if tt_assets is not None:
            _report_parity(result, [r["loss"] for r in rows])
        else:  # a speed figure always says whether it comes with a parity figure
            result["loss_parity"] = {"error": "not measured with --packed (tuner packs random tokens, torchtune text)"}
    return result


def max_context(
    workload: str,
    caps_gib: list[float],
    lo: int,
    hi: int,
    multiple: int,
    steps: int,
    overrides: list[str],
    device: str = "cuda",
    probe_timeout: float = 600,
    time_budget: float | None = None,
) -> dict:
    """For each memory cap, the longest sequence of ``workload`` that trains (`benchmarks.max_context`):
    a bisection whose probes each run ``steps`` steps in a fresh process, the issue's goal (1.5x
    unsloth's figure) probed first. Each probe is printed on stderr as it ends; past ``time_budget``
    seconds no new probe starts and the caps left say so."""
    from benchmarks import max_context as mc

    mc.check_search(caps_gib, lo, hi, multiple, steps, device)

    def command(seq_len: int, cap: float) -> list[str]:
        return mc.probe_command(workload, seq_len, cap, steps, overrides, device)

    results = mc.search_caps(caps_gib, lo, hi, multiple, command, probe_timeout, time_budget)
    return {"workload": workload, "multiple": multiple, "range": [lo, hi], "probe_steps": steps, "caps_gib": results}


def _check_nf4_exact_weights(cfg, workload: str, writes_checkpoint: bool, packed: bool) -> None:
    """Refuse ``--nf4-exact-weights`` where it would change nothing: it shapes the random checkpoint
    that the unpacked ``--compare-torchtune`` / ``--learnable-data`` write, for a model with an NF4
    base (a ``qlora_*`` builder, or ``model.quantize_base=True``)."""
    from tuner.errors import UsageError

    builder = str(cfg.model._component_).rsplit(".", 1)[-1]
    if not cfg.model.get("quantize_base", builder.startswith("qlora_")):
        raise UsageError(
            f"--nf4-exact-weights is for QLoRA (an NF4 base); --workload {workload} with model "
            f"{cfg.model._component_} quantizes nothing",
            "use --workload qlora_8b, or drop --nf4-exact-weights",
        )
    if not writes_checkpoint or packed:
        raise UsageError(
            "--nf4-exact-weights shapes the checkpoint that the unpacked --compare-torchtune and --learnable-data "
            "write; this run writes none" + (" (--packed)" if packed else ""),
            "add --compare-torchtune (without --packed) or --learnable-data, or drop --nf4-exact-weights",
        )


def _parity_inputs(
    cfg, workload: str, work: Path, num_samples: int, seq_len: int, device: str, *, nf4_exact: bool = False
):
    """Write what both tools train from (``benchmarks.parity``): a random dense HF checkpoint of the
    model's shape (``nf4_exact``: its decoder layers' linears held exactly by both NF4 formats,
    `benchmarks.nf4_exact`) and learnable token batches, and point tuner's config at them (the
    checkpointer loads without saving; the dataset reads the batches in order). Returns torchtune's assets."""
    import torch

    from benchmarks import torchtune_side as tt
    from benchmarks.parity import learnable_tokens
    from tuner.checkpoint.fill import build_on_meta
    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.devices import get_dtype

    model_type = MODEL_TYPES[workload]
    dtype = get_dtype(str(cfg.dtype), torch.device(device))
    hf_config = hf_config_from_model(build_on_meta(cfg.model, dtype), model_type)
    tokens = learnable_tokens(num_samples, seq_len, int(hf_config["vocab_size"]))
    assets = tt.write_assets(work / "assets", hf_config, model_type, None, device, tokens=tokens, nf4_exact=nf4_exact)
    cfg.checkpointer = {
        "_component_": "benchmarks.checkpointers.LoadOnlyHFCheckpointer",
        "checkpoint_dir": str(assets.checkpoint_dir),
        "checkpoint_files": list(assets.checkpoint_files),
        "model_type": model_type,
        "output_dir": str(cfg.output_dir),
    }
    cfg.dataset = {"_component_": "benchmarks.parity.token_file_dataset", "path": str(assets.data)}
    if str(cfg.optimizer._component_) == "torch.optim.AdamW" and "fused" not in cfg.optimizer:
        cfg.optimizer.fused = device == "cuda"  # torchtune's configs ask for it; both tools run the same
    return assets


def _nf4_exact_check(trainer, cfg, assets) -> dict:
    """tuner's NF4 weights, dequantized, against the checkpoint it loaded (`benchmarks.nf4_exact.nf4_differences`)."""
    from benchmarks.checkpointers import LoadOnlyHFCheckpointer
    from benchmarks.nf4_exact import nf4_differences

    checkpoint = cfg.checkpointer
    loaded = LoadOnlyHFCheckpointer(
        checkpoint.checkpoint_dir, list(checkpoint.checkpoint_files), checkpoint.model_type, checkpoint.output_dir
    ).load_checkpoint()["model"]
    return nf4_differences(trainer.decoder, loaded)


def _write_initial_adapters(trainer, cfg, assets) -> None:
    """tuner's adapter weights as they are before the first step, for torchtune's model to start from."""
    import re

    from benchmarks.parity import write_adapter_file
    from tuner.checkpoint.keys import clean_tuner_key
    from tuner.peft.utils import is_adapter_key

    adapters = {clean_tuner_key(k): v for k, v in trainer.decoder.state_dict().items() if is_adapter_key(k)}
    assets.adapters = write_adapter_file(assets.checkpoint_dir.parent / "adapters.safetensors", adapters)
    assets.model_builder = re.sub(r"^tuner\.", "torchtune.", str(cfg.model._component_))


def _report_parity(result: dict, tuner_losses: list[float]) -> None:
    """Add ``loss_parity`` (`benchmarks.parity.parity_report`) and print both tools' losses side by
    side, then the speed ratio next to the parity figure, on stderr."""
    from benchmarks.parity import CHAIN_ENTROPY, parity_report, side_by_side

    runs = {k: v["losses"] for k, v in result.items() if k.startswith("torchtune") and v.get("losses")}
    if "torchtune" not in runs:
        result["loss_parity"] = {"error": "torchtune logged no losses"}
        return
    report = parity_report(tuner_losses, runs)
    report["data"] = f"Markov chain over the vocabulary (benchmarks.parity; entropy {CHAIN_ENTROPY:.3f} nats)"
    result["loss_parity"] = report
    print(side_by_side({"tuner": tuner_losses, **runs}), file=sys.stderr)
    vs = report["tuner_vs_torchtune"]
    bound = report["noise_bound_max_abs_diff"]
    print(
        f"{result['workload']}: tuner {result['tokens_per_s_median']:,.0f} tokens/s, torchtune "
        f"{result['torchtune'].get('tokens_per_s_median') or 0:,.0f} ({result.get('ratio_tokens_per_s_torchtune')}x); "
        f"loss parity over {vs['steps']} steps: max |diff| {vs['max_abs_diff']:.3g} (rel {vs['max_rel_diff']:.2g}, "
        f"step {vs['at_step']}); torchtune-vs-torchtune noise bound "
        + (
            f"{bound:.3g}"
            if bound is not None
            else "not measured (add --parity-noise-seed or --torchtune-compile both)"
        ),
        file=sys.stderr,
    )


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
    parser.add_argument(
        "--parity-noise-seed",
        type=int,
        metavar="S",
        help="run torchtune once more with seed S (same data, weights, compile mode): the difference between "
        "its losses and the first run's is the noise bound tuner's loss parity is read against",
    )
    parser.add_argument(
        "--learnable-data",
        action="store_true",
        help="train on the learnable token batches of --compare-torchtune (written with a random HF checkpoint "
        "that tuner loads) without running torchtune: a loss curve that falls, instead of random tokens",
    )
    parser.add_argument(
        "--nf4-exact-weights",
        action="store_true",
        help="QLoRA with --compare-torchtune or --learnable-data: write the decoder layers' linears as weights that "
        "bitsandbytes' and torchao's NF4 both hold exactly (benchmarks/nf4_exact.py), so that both tools start "
        "from the same dequantized weights and a loss difference is kernels, not the NF4 format",
    )
    parser.add_argument(
        "--memory-cap-gib",
        type=float,
        metavar="GIB",
        help="let the run use at most GIB of GPU memory (torch.cuda.set_per_process_memory_fraction); 0: no cap",
    )
    parser.add_argument(
        "--max-context",
        metavar="CAPS",
        help="for each GPU memory cap in GiB (comma-separated, e.g. 16,24,48,80; 0: no cap), find the longest "
        "sequence that trains, by bisection, each probe a fresh process running --steps steps "
        "(use --workload qlora_8b_r32_all for unsloth's setup)",
    )
    parser.add_argument(
        "--context-range", default="1024:524288", metavar="LO:HI", help="--max-context: lengths to search"
    )
    parser.add_argument(
        "--context-multiple", type=int, default=1024, help="--max-context: lengths are multiples of this"
    )
    parser.add_argument("--probe-timeout", type=float, default=600, help="--max-context: seconds for one probe")
    parser.add_argument("--time-budget", type=float, metavar="S", help="--max-context: start no probe after S seconds")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value (before, between or after options)")
    args = parser.parse_intermixed_args(argv)
    from tuner.errors import TunerError

    if args.profile and args.steps < args.warmup + 3:  # the profiler's schedule: warm-up, 1 step, 2 traced
        print(
            f"error: --profile traces steps {args.warmup + 2} and {args.warmup + 3}, but --steps is {args.steps}: the "
            f"trace would hold the end-of-run save instead. Fix: --steps {args.warmup + 3} or more",
            file=sys.stderr,
        )
        return 2
    if args.max_context is not None:
        try:
            caps = [float(c) for c in args.max_context.split(",") if c.strip()]
            lo, hi = (int(x) for x in args.context_range.split(":"))
        except ValueError:
            print(
                f"error: --max-context {args.max_context!r} / --context-range {args.context_range!r} are not "
                "numbers. Fix: e.g. --max-context 16,24,48,80 --context-range 1024:524288",
                file=sys.stderr,
            )
            return 2
        call = functools.partial(
            max_context, args.workload, caps, lo, hi, args.context_multiple, args.steps, args.overrides,
            device=args.device, probe_timeout=args.probe_timeout, time_budget=args.time_budget,
        )  # fmt: skip
    else:
        call = functools.partial(
            run, args.workload, args.steps, args.warmup, args.seq_len, args.batch_size, args.overrides,
            device=args.device, compare_hf=args.compare_hf, packed=args.packed, profile=args.profile,
            memory_snapshot=args.memory_snapshot, compare_torchtune=args.compare_torchtune,
            torchtune_compile=args.torchtune_compile, torchtune_overrides=args.torchtune_overrides,
            torchtune_timeout=args.torchtune_timeout, torchtune_dir=args.torchtune_dir,
            torchtune_path=args.torchtune_path, parity_noise_seed=args.parity_noise_seed,
            learnable_data=args.learnable_data, memory_cap_gib=args.memory_cap_gib,
            nf4_exact_weights=args.nf4_exact_weights,
        )  # fmt: skip
    try:
        result = call()
    except TunerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
