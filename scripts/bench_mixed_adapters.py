"""Mixed-adapter batches against merging one adapter at a time, on one device.

    python3 scripts/bench_mixed_adapters.py --model llama3_2_1b --prompts 32 --adapters 8 --new-tokens 64

Builds the named base (random weights), ``--adapters`` random LoRA adapters (every other one DoRA)
of rank ``--rank`` on every attention and MLP projection, and ``--prompts`` synthetic prompts of 16
to 128 tokens, each with an adapter (one in ``--adapters + 1`` uses the base). Then times greedy
decoding of ``--new-tokens`` tokens per prompt (no stop token), all in one process:

- ``mixed``: every prompt in one batch over the unmerged base (`MixedAdapters` + `generate_batch`);
- ``grouped``: one batch per adapter, that adapter merged (`AdapterSwitcher`), the best merging can do;
- ``one_at_a_time``: each prompt alone with its adapter merged (tuner's generate before #23);
- ``base_batch``: every prompt in one batch with no adapter (the cost of the base alone).

Prints one JSON line: tokens/s of each, and whether mixed gave the same tokens as one_at_a_time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import torch

from tuner.generation import Adapter, AdapterSwitcher, MixedAdapters, generate, generate_batch

TARGETS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.output_proj", "mlp.w1", "mlp.w2", "mlp.w3")


def random_adapter(model: torch.nn.Module, name: str, rank: int, dora: bool, gen: torch.Generator) -> Adapter:
    params = dict(model.named_parameters())
    state = {}
    for i in range(len(model.layers)):
        for target in TARGETS:
            prefix = f"layers.{i}.{target}."
            out_dim, in_dim = params[prefix + "weight"].shape
            state[prefix + "lora_a.weight"] = torch.randn(rank, in_dim, generator=gen) / in_dim**0.5
            state[prefix + "lora_b.weight"] = torch.randn(out_dim, rank, generator=gen) * 0.02
            if dora:
                norm = params[prefix + "weight"].float().norm(dim=1).cpu()
                state[prefix + "magnitude"] = norm * (1 + 0.1 * torch.randn(out_dim, generator=gen))
    config = {"lora_rank": rank, "lora_alpha": 2.0 * rank, "use_dora": dora}
    modules = sorted({k.rsplit(".", 2)[0] + "." for k in state if k.endswith("lora_a.weight")})
    return Adapter(name=name, path=Path("random"), state=state, config=config, modules=modules)


def timed(fn, device: torch.device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama3_2_1b", help="a size builder, e.g. llama3_2_1b, smollm2_135m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    family = args.model.rsplit("_", 1)[0]
    builder = getattr(importlib.import_module(f"tuner.models.{family}"), args.model)
    torch.manual_seed(0)
    with torch.device(device):
        model = builder().to(dtype).eval()
    model.rope_init()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    adapters = {f"a{i}": random_adapter(model, f"a{i}", args.rank, i % 2 == 1, gen) for i in range(args.adapters)}
    names = [None if i % (args.adapters + 1) == 0 else f"a{i % (args.adapters + 1) - 1}" for i in range(args.prompts)]
    vocab = model.tok_embeddings.num_embeddings
    prompts = [
        torch.randint(3, vocab, (int(torch.randint(16, 129, (1,), generator=gen)),), generator=gen).tolist()
        for _ in range(args.prompts)
    ]
    n = args.new_tokens
    switcher = AdapterSwitcher(model, adapters)
    mixed = MixedAdapters(model, adapters)

    def run_mixed():
        return generate_batch(model, prompts, n, adapters=mixed, adapter_names=names)

    def run_grouped():
        for name in [None, *adapters]:
            rows = [p for p, a in zip(prompts, names) if a == name]
            switcher.activate(name)
            generate(model, rows, n)
        switcher.activate(None)

    def run_alone():
        out = []
        for prompt, name in zip(prompts, names):
            switcher.activate(name)
            out.append(generate(model, prompt, n)[len(prompt) :].tolist())
        switcher.activate(None)
        return out

    def run_base():
        return generate(model, prompts, n)

    with torch.inference_mode():
        run_mixed()  # warm-up (kernels, allocator)
        run_base()
        results = {}
        mixed_tokens, results["mixed"] = timed(run_mixed, device)
        _, results["base_batch"] = timed(run_base, device)
        _, results["grouped"] = timed(run_grouped, device)
        alone_tokens, results["one_at_a_time"] = timed(run_alone, device)
    total = args.prompts * n
    same = sum(a == b for a, b in zip(mixed_tokens, alone_tokens))
    report = {
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "prompts": args.prompts,
        "adapters": args.adapters,
        "rank": args.rank,
        "new_tokens": n,
        **{f"{k}_tokens_per_s": round(total / v, 1) for k, v in results.items()},
        **{f"{k}_s": round(v, 3) for k, v in results.items()},
        "mixed_rows_equal_to_one_at_a_time": f"{same}/{args.prompts}",
    }
    if device.type == "cuda":
        report["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
