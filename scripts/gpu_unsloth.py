"""unsloth on tuner's benchmark setups, side by side (issue #26): the same shapes, random weights and
random tokens, the same memory caps and the same probe JSON as ``scripts/benchmark.py``.

On the GPU machine (no network; the wheels of ``benchmarks/unsloth_wheels.txt`` carried in two
groups, docs/benchmarks.md "unsloth side by side"):

    python3 scripts/gpu_unsloth.py install .whl_unsloth/a                 # call 1: group a into /tmp/tuner_unsloth/site
    python3 scripts/gpu_unsloth.py prepare                                # random-init Llama 3.1 8B HF folder
    python3 scripts/gpu_unsloth.py install .whl_unsloth/b --after a       # call 2, on the same warm machine
    export PYTHONPATH=/tmp/tuner_unsloth/site
    python3 scripts/gpu_unsloth.py probe --config llama3_1/8B_qlora_single_device --seq-len 2048 \
        --batch-size 2 --steps 6 --warmup 2                               # the qlora_8b speed point
    python3 scripts/gpu_unsloth.py max-context 16,24 --context-range 4096:196608 --time-budget 300

``prepare`` writes the model a tuner config describes (default ``llama3_1/8B_qlora_long_context``;
``model.*`` overrides change the shape) as an HF folder: config.json, bf16 safetensors of random
weights (``benchmarks.torchtune_side.write_hf_checkpoint``, the torchtune side's writer) and a
Llama-3-style word-level tokenizer of the model's vocabulary size (unsloth's ``from_pretrained``
reads a folder and its tokenizer; the Hub is not reachable). unsloth quantizes the bf16 weights to
NF4 as it loads them (``load_in_4bit``), as it does for any non-prequantized model.

``probe`` trains in this process: ``FastLanguageModel.from_pretrained(load_in_4bit=True)``, then
``get_peft_model`` with the LoRA of the tuner config (rank, alpha, target modules: for the
long-context config rank 32 on every linear layer), ``use_gradient_checkpointing="unsloth"``
(unsloth's offloaded checkpoints), torch AdamW with the config's lr and weight decay, ``--steps``
steps of random tokens (labels = inputs), batch ``--batch-size``. The GPU memory cap is set before
the model is loaded (``benchmarks.max_context.cap_gpu_memory``, as tuner's probes do). It prints one
JSON line with the fields of tuner's benchmark (``tokens_per_s_median``, ``peak_alloc_gib``,
``peak_reserved_gib``, ``setup_alloc_gib``, ``host_peak_rss_gib``, losses, ...), so that
``benchmarks.max_context.read_probe`` reads it. If unsloth cannot be imported it says so in one line.

``max-context`` is tuner's search (``benchmarks.max_context.search_caps``) with ``probe`` as the runner:
per cap a bisection, the goal (1.5x unsloth's published figure) probed first, each probe a fresh process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Where the carried wheels are installed and the model folder is written: outside the checkout, in /tmp,
# which the device machine keeps between calls while it stays warm (a fresh machine keeps nothing). Not an
# ignored folder of the checkout: session 9 found one under .whl_unsloth/ gone at the next call, the
# carried .whl_unsloth/b having replaced its parent there.
WORK = Path(os.environ.get("TUNER_UNSLOTH_WORK", "/tmp/tuner_unsloth"))
SITE = str(WORK / "site")
MODEL_DIR = str(WORK / "model")
LONG_CONTEXT_CONFIG = "llama3_1/8B_qlora_long_context"  # unsloth's published setup (qlora_8b_r32_all)
INSTALL_FIX = (
    "install the carried wheels on this machine: `python3 scripts/gpu_unsloth.py install .whl_unsloth/a`, then "
    "`install .whl_unsloth/b --after a` on the same warm machine, and export PYTHONPATH=" + SITE
)
# unsloth must see no network (no statistics download, the Hub offline) and keep its generated code
# out of the working directory
OFFLINE_ENV = {
    "UNSLOTH_DISABLE_STATISTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "UNSLOTH_COMPILE_LOCATION": "/tmp/unsloth_compiled_cache",
}


class ScriptError(Exception):
    """A one-line error with its fix; printed as ``error: ... Fix: ...`` with exit code 2."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message}. Fix: {fix}")


# ---- install ------------------------------------------------------------------------------------
def installed_marker(target: str | Path, group: str) -> Path:
    """The file that says wheel group ``group`` (its folder's name) was installed into ``target``."""
    return Path(target) / f".installed_{group}"


def install_command(folder: Path, target: str) -> list[str]:
    """pip's install of every wheel in ``folder`` into ``target``, offline and without resolving (the
    set was checked with benchmarks/wheel_set.py)."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        raise ScriptError(f"no wheels in {folder}", "download them first (benchmarks/unsloth_wheels.txt)")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    return [*pip, "--upgrade", "--target", target, *wheels]


def install(folder: str, target: str = SITE, after: list[str] | None = None) -> str:
    """Install one carried wheel group into ``target`` and mark it installed; ``after``: the groups a
    previous call must have installed on this machine (a fresh machine keeps nothing)."""
    missing = [g for g in after or [] if not installed_marker(target, g).exists()]
    if missing:
        raise ScriptError(
            f"wheel group {', '.join(missing)} is not installed in {target}: this machine did not run the first "
            "call (a fresh machine keeps nothing from an earlier one)",
            "run the first call's command again, then this one within the machine's 30 s warm time",
        )
    path = Path(folder)
    subprocess.run(install_command(path, target), check=True)
    installed_marker(target, path.name).write_text(f"{len(list(path.glob('*.whl')))} wheels from {path}\n")
    return f"installed {path} into {target}"


# ---- the model folder ---------------------------------------------------------------------------
def hf_config_of(config: str, overrides: list[str]) -> dict[str, Any]:
    """The HF config.json of the model a tuner config describes (``model.*`` overrides applied)."""
    import torch

    from tuner.checkpoint.fill import build_on_meta
    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.config import apply_overrides, load_config
    from tuner.registry import resolve_config

    cfg = load_config(resolve_config(config))
    apply_overrides(cfg, list(overrides))
    return hf_config_from_model(build_on_meta(cfg.model, torch.bfloat16), "LLAMA3")


def write_tokenizer(folder: str | Path, vocab_size: int) -> None:
    """A word-level tokenizer of exactly ``vocab_size`` ids, the last 256 Llama 3's special tokens
    (so that unsloth's tokenizer checks and its pad-token choice see what a Llama 3.1 folder has)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = llama3_ids(vocab_size)
    vocab = {f"t{i}": i for i in range(min(special.values()))} | special
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(special))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        unk_token="t0",
    )
    fast.save_pretrained(str(folder))


def prepare(model_dir: str = MODEL_DIR, config: str = LONG_CONTEXT_CONFIG, overrides=(), device: str = "cuda") -> str:
    """Write the random-init HF folder unsloth loads (see the module docstring)."""
    from benchmarks.torchtune_side import write_hf_checkpoint

    hf_config = hf_config_of(config, list(overrides))
    special = llama3_ids(int(hf_config["vocab_size"]))
    hf_config.update(bos_token_id=special["<|begin_of_text|>"], eos_token_id=special["<|eot_id|>"])
    files = write_hf_checkpoint(model_dir, hf_config, "LLAMA3", device=device)
    write_tokenizer(model_dir, int(hf_config["vocab_size"]))
    return f"wrote {model_dir}: {len(files)} safetensors files, {hf_config['num_hidden_layers']} layers"


def llama3_ids(vocab_size: int) -> dict[str, int]:
    """Llama 3's 256 special tokens as the last ids of a ``vocab_size`` vocabulary (128,000+ for the real one)."""
    from tuner.data.tokenizers.llama3 import NUM_RESERVED_SPECIAL_TOKENS, llama3_special_tokens

    return llama3_special_tokens(vocab_size - NUM_RESERVED_SPECIAL_TOKENS)


# ---- the LoRA setup of a tuner config -----------------------------------------------------------
@dataclass
class LoraSetup:
    """What unsloth's ``get_peft_model`` and the optimizer take, read off a tuner config."""

    rank: int
    alpha: float
    target_modules: list[str]
    lr: float
    weight_decay: float


def lora_setup(config: str) -> LoraSetup:
    """The LoRA of a tuner config in HF module names (tuner's q_proj/.../output_proj, w1/w2/w3)."""
    from tuner.checkpoint.hf_keys import HF_LINEAR_NAMES
    from tuner.config import load_config
    from tuner.registry import resolve_config

    cfg = load_config(resolve_config(config))
    m = cfg.model
    modules = list(m.lora_attn_modules) + (["w1", "w2", "w3"] if m.get("apply_lora_to_mlp", False) else [])
    modules += ["output"] if m.get("apply_lora_to_output", False) else []
    return LoraSetup(
        rank=int(m.lora_rank),
        alpha=float(m.lora_alpha),
        target_modules=[HF_LINEAR_NAMES[x] for x in modules],
        lr=float(cfg.optimizer.lr),
        weight_decay=float(cfg.optimizer.get("weight_decay", 0.0)),
    )


# ---- one probe: unsloth trains in this process --------------------------------------------------
def import_unsloth() -> Any:
    """unsloth, imported first (it patches transformers and peft), or a ScriptError naming why not."""
    os.environ.update({k: v for k, v in OFFLINE_ENV.items() if k not in os.environ})
    try:
        import unsloth
    except Exception as e:  # unsloth raises more than ImportError when it cannot run (no GPU, bad versions)
        first = (str(e).strip().splitlines() or [""])[0]
        raise ScriptError(f"unsloth cannot be imported here ({type(e).__name__}: {first})", INSTALL_FIX) from None
    return unsloth


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("unsloth", "unsloth_zoo", "torch", "transformers", "peft", "bitsandbytes", "xformers", "triton"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def unsloth_steps(
    model_dir: str, lora: LoraSetup, seq_len: int, batch_size: int, steps: int, device: str = "cuda", seed: int = 0
) -> dict[str, Any]:
    """Load, adapt and train ``steps`` steps with unsloth (on CUDA; on CPU unsloth's own CPU fallback,
    a check of this runner); per-step times and losses, the GPU memory after setup and the attention
    unsloth chose."""
    import_unsloth()
    import torch
    from unsloth import FastLanguageModel

    from benchmarks.timed_steps import timed_steps

    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_dir, max_seq_length=seq_len, dtype=torch.bfloat16, load_in_4bit=True
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.rank,
        lora_alpha=lora.alpha,
        target_modules=lora.target_modules,
        lora_dropout=0.0,
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=seed,
        max_seq_length=seq_len,
    )
    FastLanguageModel.for_training(model)
    setup_alloc = torch.cuda.memory_allocated() if device == "cuda" else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lora.lr, weight_decay=lora.weight_decay, fused=device == "cuda")
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    batches = (torch.randint(0, vocab, (batch_size, seq_len), generator=gen).to(device) for _ in range(steps))
    times, losses = timed_steps(model, opt, batches)
    from unsloth.models import _utils

    return {
        "step_s": times,
        "losses": losses,
        "setup_alloc_bytes": setup_alloc,
        "trainable_params": sum(p.numel() for p in params),
        "attention": "xformers " + _utils.xformers_version if _utils.xformers_version else "no xformers",
        "adapted": sorted({type(m).__name__ for n, m in model.named_modules() if n.endswith(".base_layer")}),
    }


def probe_result(
    run: dict[str, Any],
    *,
    config: str,
    seq_len: int,
    batch_size: int,
    warmup: int,
    memory_cap_gib: float | None,
    peak_alloc: int | None,
    peak_reserved: int | None,
    host_peak_rss_gib: float | None,
    tool_versions: dict[str, str | None],
    device: str,
) -> dict[str, Any]:
    """The probe's JSON: tuner's benchmark fields (median tokens/s over the steps after ``warmup``)."""
    per_step = [batch_size * seq_len / s for s in run["step_s"]]
    steady = per_step[warmup:] or per_step[-1:]

    def gib(n: int | None) -> float | None:
        return None if n is None else round(n / 2**30, 2)

    return {
        "tool": f"unsloth-{tool_versions.get('unsloth')}",
        "config": config,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": len(per_step),
        "warmup_steps": warmup,
        "tokens_per_s_median": round(statistics.median(steady), 1),
        "tokens_per_s_steps": [round(t) for t in per_step],
        "peak_alloc_gib": gib(peak_alloc),
        "peak_reserved_gib": gib(peak_reserved),
        "setup_alloc_gib": gib(run.get("setup_alloc_bytes")),
        "host_peak_rss_gib": host_peak_rss_gib,
        "memory_cap_gib": memory_cap_gib or None,
        "first_loss": run["losses"][0],
        "final_loss": run["losses"][-1],
        "losses": run["losses"],
        "trainable_params": run.get("trainable_params"),
        "attention": run.get("attention"),
        "adapted": run.get("adapted"),  # the classes under the LoRA layers: Linear4bit for QLoRA
        "data": "random tokens",
        "device": device,
        "versions": tool_versions,
    }


def probe(
    model_dir: str,
    config: str,
    seq_len: int,
    batch_size: int,
    steps: int,
    warmup: int,
    memory_cap_gib: float | None,
    device: str = "cuda",
    runner=unsloth_steps,
) -> dict[str, Any]:
    """One probe in this process: cap, train with ``runner`` (unsloth's, or a stand-in in tests), report.
    ``device="cpu"``: unsloth's CPU fallback, no cap (a check of the runner, not a figure)."""
    from benchmarks.max_context import cap_gpu_memory, host_peak_rss_gib

    if steps < 1 or not 0 <= warmup < steps:
        raise ScriptError(f"--steps {steps} --warmup {warmup}", "use --steps >= 1 and 0 <= --warmup < --steps")
    if device != "cuda":
        cap_gpu_memory(memory_cap_gib, device)  # refuses a cap where there is no GPU
    if not Path(model_dir, "config.json").is_file():
        raise ScriptError(f"no model folder at {model_dir}", "write it first: python3 scripts/gpu_unsloth.py prepare")
    if runner is unsloth_steps:
        import_unsloth()  # first: it patches transformers and peft; one line if it cannot be imported
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ScriptError("unsloth's probe needs a CUDA GPU and none is visible", "run it on the GPU machine")
        cap_gpu_memory(memory_cap_gib, device)
        torch.cuda.reset_peak_memory_stats()
    lora = lora_setup(config)
    run = runner(model_dir, lora, seq_len, batch_size, steps, device=device)
    peak_alloc = peak_reserved = None
    if device == "cuda":
        peak_alloc, peak_reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        device = torch.cuda.get_device_name()
    result = probe_result(
        run,
        config=config,
        seq_len=seq_len,
        batch_size=batch_size,
        warmup=warmup,
        memory_cap_gib=memory_cap_gib,
        peak_alloc=peak_alloc,
        peak_reserved=peak_reserved,
        host_peak_rss_gib=host_peak_rss_gib(),
        tool_versions=versions(),
        device=device,
    )
    return {**result, "lora": asdict(lora)}


# ---- the longest context per cap ----------------------------------------------------------------
def probe_command(model_dir: str, config: str, seq_len: int, cap_gib: float, steps: int) -> list[str]:
    """argv of one unsloth probe in a fresh process (batch 1, ``steps`` steps, the last one timed)."""
    flags = {
        "--model-dir": model_dir,
        "--config": config,
        "--seq-len": seq_len,
        "--batch-size": 1,
        "--steps": steps,
        "--warmup": steps - 1,
        "--memory-cap-gib": cap_gib,
    }
    return [sys.executable, str(Path(__file__).resolve()), "probe", *(str(x) for flag in flags.items() for x in flag)]


def max_context(
    caps_gib: list[float],
    lo: int,
    hi: int,
    multiple: int,
    steps: int,
    model_dir: str = MODEL_DIR,
    config: str = LONG_CONTEXT_CONFIG,
    probe_timeout: float = 600,
    time_budget: float | None = None,
    command=probe_command,
) -> dict[str, Any]:
    """tuner's longest-context search with unsloth's probe as the runner; the JSON of
    ``scripts/benchmark.py --max-context`` plus ``tool``."""
    from benchmarks import max_context as mc

    mc.check_search(caps_gib, lo, hi, multiple, steps, "cuda")
    results = mc.search_caps(
        caps_gib,
        lo,
        hi,
        multiple,
        lambda seq_len, cap: command(model_dir, config, seq_len, cap, steps),
        probe_timeout,
        time_budget,
    )
    return {
        "tool": "unsloth",
        "workload": f"unsloth on {config}",
        "multiple": multiple,
        "range": [lo, hi],
        "probe_steps": steps,
        "caps_gib": results,
    }


# ---- command line -------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("install", help="install one carried wheel group into --target")
    i.add_argument("folder")
    i.add_argument("--target", default=SITE)
    i.add_argument("--after", action="append", default=[], metavar="GROUP", help="a group installed before")
    w = sub.add_parser("prepare", help="write the random-init HF model folder")
    w.add_argument("--model-dir", default=MODEL_DIR)
    w.add_argument("--config", default=LONG_CONTEXT_CONFIG)
    w.add_argument("--device", default="cuda", help="where the random weights are drawn")
    w.add_argument("overrides", nargs="*", help="model.* overrides of the config (a smaller shape)")
    r = sub.add_parser("probe", help="train with unsloth in this process and print one JSON line")
    r.add_argument("--model-dir", default=MODEL_DIR)
    r.add_argument("--config", default=LONG_CONTEXT_CONFIG, help="the tuner config whose LoRA unsloth applies")
    r.add_argument("--seq-len", type=int, default=2048)
    r.add_argument("--batch-size", type=int, default=1)
    r.add_argument("--steps", type=int, default=1)
    r.add_argument("--warmup", type=int, default=0)
    r.add_argument("--memory-cap-gib", type=float, default=0.0)
    r.add_argument("--device", default="cuda", help="cuda (figures) or cpu (unsloth's CPU fallback: a check)")
    m = sub.add_parser("max-context", help="the longest context per GPU memory cap, by bisection")
    m.add_argument("caps", help="GiB, comma-separated (16,24,48,80; 0: no cap)")
    m.add_argument("--model-dir", default=MODEL_DIR)
    m.add_argument("--config", default=LONG_CONTEXT_CONFIG)
    m.add_argument("--context-range", default="4096:524288", metavar="LO:HI")
    m.add_argument("--context-multiple", type=int, default=4096)
    m.add_argument("--steps", type=int, default=1)
    m.add_argument("--probe-timeout", type=float, default=600)
    m.add_argument("--time-budget", type=float, metavar="S", help="start no probe after S seconds")
    return p


def main(argv: list[str] | None = None, runner=unsloth_steps, command=probe_command) -> int:
    args = parser().parse_args(argv)
    from tuner.errors import TunerError

    try:
        if args.command == "install":
            print(install(args.folder, args.target, args.after))
            return 0
        if args.command == "prepare":
            print(prepare(args.model_dir, args.config, args.overrides, args.device))
            return 0
        if args.command == "probe":
            with contextlib.redirect_stdout(sys.stderr):  # unsloth prints banners: stdout keeps the JSON alone
                result = probe(
                    args.model_dir,
                    args.config,
                    args.seq_len,
                    args.batch_size,
                    args.steps,
                    args.warmup,
                    args.memory_cap_gib,
                    device=args.device,
                    runner=runner,
                )
        else:
            try:
                caps = [float(c) for c in args.caps.split(",") if c.strip()]
                lo, hi = (int(x) for x in args.context_range.split(":"))
            except ValueError:
                raise ScriptError(
                    f"caps {args.caps!r} / --context-range {args.context_range!r} are not numbers",
                    "e.g. max-context 16,24 --context-range 4096:196608",
                ) from None
            result = max_context(
                caps,
                lo,
                hi,
                args.context_multiple,
                args.steps,
                args.model_dir,
                args.config,
                args.probe_timeout,
                args.time_budget,
                command=command,
            )
    except ScriptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TunerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except subprocess.CalledProcessError as e:
        print(f"error: pip install failed (exit {e.returncode}). Fix: see pip's message above", file=sys.stderr)
        return 1
    except Exception as e:
        if type(e).__name__ != "OutOfMemoryError":
            raise
        # one line, with the marker benchmarks.max_context.read_probe reads as "does not fit"
        print(f"error: out of memory ({(str(e).splitlines() or [''])[0]})", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
