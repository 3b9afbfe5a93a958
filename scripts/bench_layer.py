"""Time one LoRA decoder layer of the Llama-3.2-1B shape (forward + backward) under variants, and
the pieces it is made of (GEMM shapes, the loss's output projection, attention), to see where a
LoRA step's time goes and what a change to the layer would buy before building it.

    python scripts/bench_layer.py                                   # pieces, then every variant
    python scripts/bench_layer.py --no-pieces --variants compiled fused --kernels

Variants (each compiled per layer, as ``compile=True`` does):
  compiled     the layer as tuner runs it;
  fused        q/k/v (and gate/up) through one GEMM over their frozen weights concatenated, and the
               LoRA ``A`` of the projections that share an input (q/v, gate/up) through one GEMM;
  fused_base   only the first half of ``fused``;  shared_a: only the second half;
  autotune     inductor's max-autotune (Triton GEMM templates with fused epilogues against cuBLAS);
  *_cdt        (suffix) inductor's coordinate-descent tuning of its own kernels.
The ``fused*``/``shared_a`` variants are prototypes (`fuse_prototype`) that patch the layer's
forwards; tests/bench/test_bench_layer.py checks on the CPU that they compute what the layer does.

Each variant prints one JSON line: ``ms_fwd_bwd`` (CUDA events around a Python-driven forward +
backward, median of 30: includes launch gaps that a training loop hides by running ahead),
``gpu_kernel_ms`` (the sum of its kernels' times over 5 profiled iterations, per iteration: the
figure to compare), peak memory, and the largest relative difference of its output and gradients
from the first variant's on the same inputs. ``--kernels`` adds one line per kernel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

VARIANTS = ("compiled", "fused", "fused_base", "shared_a", "autotune")


@dataclass(frozen=True)
class Shape:
    """Layer dimensions and LoRA settings (default: Llama-3.2-1B with the shipped LoRA config)."""

    dim: int = 2048
    heads: int = 32
    kv_heads: int = 8
    hidden: int = 8192
    rank: int = 64
    alpha: float = 128.0


def build_layer(shape: Shape, device: str = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """A one-layer LoRA decoder (q/v/output_proj and the MLP adapted, non-zero ``B``), adapters trainable."""
    from tuner.models.llama3_2 import lora_llama3_2
    from tuner.peft import get_adapter_params, set_trainable_params

    torch.manual_seed(seed)
    model = lora_llama3_2(
        ["q_proj", "v_proj", "output_proj"],
        apply_lora_to_mlp=True,
        lora_rank=shape.rank,
        lora_alpha=shape.alpha,
        vocab_size=256,
        num_layers=1,
        num_heads=shape.heads,
        num_kv_heads=shape.kv_heads,
        embed_dim=shape.dim,
        max_seq_len=4096,
        intermediate_dim=shape.hidden,
    )
    for name, p in model.named_parameters():
        if name.endswith("lora_b.weight"):
            torch.nn.init.normal_(p, std=0.02)  # non-zero B, so every path is exercised
    model = model.to(device, dtype)
    set_trainable_params(model, get_adapter_params(model))
    return model


def fuse_prototype(layer, fuse_base: bool = True, share_a: bool = True) -> None:
    """Patch ``layer`` (a plain-LoRA llama layer) to run the ``fused`` variant or one of its halves.

    ``fuse_base``: the frozen q/k/v (gate/up) weights become row slices of one concatenated weight,
    multiplied once and split. ``share_a``: the adapters' ``A`` of projections with one input are
    concatenated and multiplied once. Splits, not slices, so backward joins gradients with one cat.
    """
    from tuner.models.rope import apply_rope

    attn, mlp = layer.attn, layer.mlp

    def concatenate(mods) -> torch.Tensor:
        weight = torch.cat([m.weight.detach() for m in mods])
        row = 0
        for m in mods:
            n = m.weight.shape[0]
            m.weight.data = weight[row : row + n]
            row += n
        return weight

    qkv_weight = concatenate([attn.q_proj, attn.k_proj, attn.v_proj]) if fuse_base else None
    gate_up_weight = concatenate([mlp.w1, mlp.w3]) if fuse_base else None

    def bases(x, mods, weight):
        if weight is not None:
            return F.linear(x, weight).split([m.weight.shape[0] for m in mods], dim=-1)
        return [F.linear(x, m.weight) for m in mods]

    def adapter_inputs(x, mods):
        if share_a:
            a = torch.cat([m.lora_a.weight for m in mods])
            return F.linear(x, a).split([m.rank for m in mods], dim=-1)
        return [m.lora_a(x) for m in mods]

    def attn_forward(x, *, mask=None, rope=None, cache_pos=None):
        b, s, _ = x.shape
        q, k, v = bases(x, (attn.q_proj, attn.k_proj, attn.v_proj), qkv_weight)
        hq, hv = adapter_inputs(x, (attn.q_proj, attn.v_proj))
        q = q + attn.q_proj.lora_b(hq * attn.q_proj.scaling)
        v = v + attn.v_proj.lora_b(hv * attn.v_proj.scaling)
        q = q.view(b, s, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = k.view(b, s, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        v = v.view(b, s, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=attn.scale, enable_gqa=attn.num_kv_heads != attn.num_heads
        )
        return attn.output_proj(out.transpose(1, 2).reshape(b, s, -1))

    def mlp_forward(x):
        g, u = bases(x, (mlp.w1, mlp.w3), gate_up_weight)
        hg, hu = adapter_inputs(x, (mlp.w1, mlp.w3))
        g = g + mlp.w1.lora_b(hg * mlp.w1.scaling)
        u = u + mlp.w3.lora_b(hu * mlp.w3.scaling)
        return mlp.w2(F.silu(g) * u)

    attn.forward = attn_forward
    mlp.forward = mlp_forward


def prepare(name: str, layer) -> None:
    """Apply variant ``name``'s model change (compile settings are `run_variant`'s)."""
    base = name.removesuffix("_cdt")
    if base in ("fused", "fused_base", "shared_a"):
        fuse_prototype(layer, fuse_base=base != "shared_a", share_a=base != "fused_base")


def cuda_ms(fn, iters: int = 30, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` between CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_times(fn, iters: int = 5) -> dict[str, tuple[float, int]]:
    """GPU milliseconds and launches per call of ``fn``, by kernel name, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type.name == "CUDA":
            kernels.setdefault(event.name[:90], []).append(event.time_range.elapsed_us() / 1e3)
    return {k: (sum(v) / iters, len(v) // iters) for k, v in kernels.items()}


def run_variant(
    name: str, shape: Shape, batch: int, seq: int, reference: dict | None, kernels: bool
) -> tuple[dict, dict]:
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    inductor.max_autotune = name.startswith("autotune")
    inductor.max_autotune_gemm_backends = "ATEN,TRITON"
    inductor.coordinate_descent_tuning = name.endswith("_cdt")
    model = build_layer(shape)
    layer = model.layers[0]
    prepare(name, layer)
    layer.compile()
    cos, sin = model.rope(seq, None)
    rope = (cos.to(torch.bfloat16), sin.to(torch.bfloat16))
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(batch, seq, shape.dim, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
    grad = torch.randn(batch, seq, shape.dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    params = [p for p in layer.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        out = layer(x, rope=rope)
        out.backward(grad)
        return out

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    ms = cuda_ms(step)
    per_kernel = kernel_times(step)
    torch.cuda.reset_peak_memory_stats()
    out = step()
    peak = torch.cuda.max_memory_allocated() / 2**30
    values = {
        "out": out.detach().float(),
        "dx": x.grad.float(),
        **{n: p.grad.float() for n, p in layer.named_parameters() if p.requires_grad},
    }
    result = {
        "variant": name,
        "ms_fwd_bwd": round(ms, 3),
        "gpu_kernel_ms": round(sum(t for t, _ in per_kernel.values()), 3),
        "compile_s": round(compile_s, 1),
        "peak_gib": round(peak, 2),
    }
    if reference is not None:
        result["max_rel_diff"] = round(
            max(((values[k] - reference[k]).norm() / reference[k].norm()).item() for k in reference), 5
        )
    if kernels:
        for kernel, (t, calls) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0]):
            print(json.dumps({"variant": name, "kernel": kernel, "ms": round(t, 4), "calls": calls}))
    return result, values


def pieces(shape: Shape, batch: int, seq: int, vocab: int = 128_256) -> list[dict]:
    """The layer's GEMMs (forward ``x W^T``, backward ``dY W``), the loss's output projection per
    chunk size, attention forward + backward (cuDNN, flash) and the device-to-device copy rate."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    m, d, kv = batch * seq, shape.dim, shape.dim * shape.kv_heads // shape.heads
    gemms = [
        ("q/o", m, d, d),
        ("k/v", m, d, kv),
        ("qkv", m, d, d + 2 * kv),
        ("gate/up", m, d, shape.hidden),
        ("gate+up", m, d, 2 * shape.hidden),
        ("down", m, shape.hidden, d),
        ("lora_a", m, d, shape.rank),
        ("lora_b", m, shape.rank, shape.hidden),
    ]
    gemms += [("output", rows, d, vocab) for rows in (1024, 2048, 4096)]
    out = []
    for label, rows, k, n in gemms:
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn(rows, n, device="cuda", dtype=torch.bfloat16)
        fwd, bwd = cuda_ms(lambda: F.linear(x, w)), cuda_ms(lambda: dy @ w)
        flops = 2 * rows * k * n
        out.append(
            {
                "gemm": label,
                "M": rows,
                "K": k,
                "N": n,
                "fwd_ms": round(fwd, 4),
                "fwd_tflops": round(flops / fwd / 1e9, 1),
                "bwd_dx_ms": round(bwd, 4),
                "bwd_tflops": round(flops / bwd / 1e9, 1),
            }
        )
        del x, w, dy
    head = shape.dim // shape.heads
    q = torch.randn(batch, shape.heads, seq, head, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(batch, shape.kv_heads, seq, head, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    go = torch.randn_like(q)
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        try:
            with sdpa_kernel(backend):
                fwd = cuda_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
                both = cuda_ms(
                    lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).backward(go)
                )
            out.append({"attention": backend.name, "fwd_ms": round(fwd, 3), "fwd_bwd_ms": round(both, 3)})
        except RuntimeError as exc:
            out.append({"attention": backend.name, "error": str(exc)[:200]})
    nbytes = 2 * 2**30
    a = torch.empty(nbytes // 2, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    out.append({"copy_gb_s": round(2 * nbytes / cuda_ms(lambda: b.copy_(a)) / 1e6, 1)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--no-pieces", action="store_true", help="skip the GEMM / attention / copy timings")
    parser.add_argument("--kernels", action="store_true", help="also print each variant's GPU time per kernel")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: bench_layer times CUDA kernels; run it on a GPU machine", file=sys.stderr)
        return 2
    unknown = [v for v in args.variants if v.removesuffix("_cdt") not in VARIANTS]
    if unknown:
        print(
            f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)} (each may end in _cdt)",
            file=sys.stderr,
        )
        return 2
    shape = Shape()
    if not args.no_pieces:
        for row in pieces(shape, args.batch, args.seq):
            print(json.dumps(row), flush=True)
    reference = None
    for name in args.variants:
        try:
            result, values = run_variant(name, shape, args.batch, args.seq, reference, args.kernels)
        except Exception as exc:  # keep the other variants' numbers
            result, values = {"variant": name, "error": f"{type(exc).__name__}: {exc}"[:400]}, None
        if reference is None and values is not None:
            reference = values
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
