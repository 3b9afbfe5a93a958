"""Time NF4 dequantization and one frozen NF4 linear layer (forward + input-gradient backward) on CUDA.

    python scripts/bench_nf4.py            # Llama-3.1-8B weight shapes, 4096 tokens, bf16

Prints one JSON line per weight shape, milliseconds per call (mean of 20 after 3 warm-ups):
dense (bf16 matmul, the floor), bitsandbytes' dequantize kernels, tuner's Triton kernel (what
`dequantize_nf4` runs on CUDA, eager and compiled), the same dequantization as tensor
ops eager and compiled (what a compiled layer runs where Triton is missing), `linear_nf4` with and
without the dense weight saved for backward, and torchao's NF4 (torchtune's path) when installed; for
QLoRA computing in FP8, the rowwise e4m3 weight made in two steps (dequantization, then
`fp8.quantize_rows`; eager and compiled) and by the fused kernels (`nf4_triton.nf4_row_scales`, once per
weight where the scales are kept, and `nf4_triton.nf4_to_fp8` in both layouts), against a compiled
transposing copy of an FP8 weight.

    python scripts/bench_nf4.py transpose  # the FP8 weight's transposed copy alone (below)

The transposed copy that an FP8 input-gradient GEMM multiplies by (`fp8.input_grad_operand`), for the
output projections of Llama 3.2 1B / 3.1 8B and two 8B MLP weights: torch's copy (eager), inductor's
(compiled) and the tiled Triton kernel (`fp8_triton.transpose_bytes`, what eager code runs on CUDA).

    python scripts/bench_nf4.py loss  # one chunk of the FP8 output loss (below)

One 1,024-row chunk of LoRA's ``fp8_output`` loss on the Llama 3.2 1B's vocabulary (bf16 logits in,
row losses and the e4m3 gradient out): the compiled tensor ops (`loss._ce_forward_backward_fp8`, three
reads of the logits; and, for reference, the bf16 recipes' chunk, `loss._ce_forward_backward`, whose
gradient is bf16) against the Triton kernel (`loss_triton.ce_grad_fp8`, two reads) at each block
size, warp count and rows per program, with the kernel's memory traffic per second.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tuner.quantization import fp8_triton, nf4, nf4_triton  # noqa: E402
from tuner.quantization.fp8 import quantize_rows  # noqa: E402
from tuner.training import loss, loss_triton  # noqa: E402


def mean_ms(fn, n: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - start) / n * 1e3, 3)


def main() -> None:
    tokens = 4096
    compiled_ops = torch.compile(nf4.dequantize_nf4_ops)
    two_step_compiled = torch.compile(lambda q: quantize_rows(nf4.dequantize_nf4(q)))
    transpose_compiled = torch.compile(lambda t: t.t().contiguous())  # what fp8_all's backward did to the kept copy
    for out_f, in_f in [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)]:
        w = torch.randn(out_f, in_f, device="cuda", dtype=torch.bfloat16) * 0.02
        q = nf4.quantize_nf4(w)
        tables = nf4.lookup_tables(q.device)
        payload = (q.packed, q.absmax, q.absmax_scale, q.absmax_offset, *tables)
        fp8_weight = quantize_rows(w)[0]
        to_fp8 = nf4_triton.nf4_row_scales(*payload, q.shape, q.dtype)[0]
        x = torch.randn(tokens, in_f, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn(tokens, out_f, device="cuda", dtype=torch.bfloat16)
        row = {
            "shape": [out_f, in_f],
            "dense_fwd_bwd": mean_ms(lambda: F.linear(x, w).backward(g)),
            "dequant_bnb": mean_ms(lambda: nf4.bnb_functional().dequantize_4bit(q.packed, q.quant_state())),
            "dequant_triton": mean_ms(lambda: nf4.dequantize_nf4(q)),
            "dequant_ops_eager": mean_ms(lambda: nf4.dequantize_nf4_ops(q, *tables)),
            "dequant_ops_compiled": mean_ms(lambda: compiled_ops(q, *tables)),
            "nf4_fwd_bwd": mean_ms(lambda: nf4.linear_nf4(x, q).backward(g)),
            "nf4_fwd_bwd_save_dense": mean_ms(lambda: nf4.linear_nf4(x, q, save_dense=True).backward(g)),
            "fp8_rows_two_step": mean_ms(lambda: quantize_rows(nf4.dequantize_nf4(q))),
            "fp8_rows_two_step_compiled": mean_ms(lambda: two_step_compiled(q)),
            "fp8_row_scales_fused": mean_ms(lambda: nf4_triton.nf4_row_scales(*payload, q.shape, q.dtype)),
            "fp8_write_fused": mean_ms(lambda: nf4_triton.nf4_to_fp8(*payload, to_fp8, q.shape, q.dtype)),
            "fp8_write_fused_transposed": mean_ms(
                lambda: nf4_triton.nf4_to_fp8(*payload, to_fp8, q.shape, q.dtype, transposed=True)
            ),
            "fp8_transpose_compiled": mean_ms(lambda: transpose_compiled(fp8_weight)),
        }
        try:
            from torchao.dtypes.nf4tensor import linear_nf4 as ao_linear_nf4
            from torchao.dtypes.nf4tensor import to_nf4

            a = to_nf4(w, 64, 256)
            row["torchao_fwd_bwd"] = mean_ms(lambda: ao_linear_nf4(x, a).backward(g))
            row["torchao_dequant"] = mean_ms(lambda: a.to(torch.bfloat16))
        except ImportError:
            pass
        print(json.dumps(row), flush=True)


def transpose_rows() -> None:
    compiled = torch.compile(lambda t: t.t().contiguous())
    for shape in [(128256, 2048), (128256, 4096), (14336, 4096), (4096, 14336)]:
        t = torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
        row = {
            "shape": list(shape),
            "eager_copy": mean_ms(lambda: t.t().contiguous()),
            "compiled_copy": mean_ms(lambda: compiled(t)),
            "triton_tiles": mean_ms(lambda: fp8_triton.transpose_bytes(t)),
        }
        row["triton_tb_per_s"] = round(2 * t.numel() / row["triton_tiles"] / 1e9, 2)
        print(json.dumps(row), flush=True)


def loss_rows(rows: int = 1024, vocab: int = 128256) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(rows, vocab, device="cuda", generator=g) * 2).to(torch.bfloat16)
    targets = torch.randint(0, vocab, (rows,), device="cuda", generator=g)
    scale = torch.rand(vocab, device="cuda", generator=g) * 1e-3 + 1e-5
    log_scale = scale.log()
    valid = targets != -100
    compiled = torch.compile(loss._ce_forward_backward_fp8, dynamic=True)  # as loss._kernel compiles it
    bf16_grad = torch.compile(loss._ce_forward_backward, dynamic=True)  # the bf16 recipes' chunk, for reference
    row = {"shape": [rows, vocab], "compiled_tensor_ops": mean_ms(lambda: compiled(logits, targets, valid, scale))}
    row["compiled_bf16_gradient"] = mean_ms(lambda: bf16_grad(logits, targets, valid))
    print(json.dumps(row))
    for rows_per_program in (1, 2, 4):
        for block in (1024, 2048, 4096):
            for warps in (4, 8):
                loss_triton.ROWS, loss_triton.BLOCK, loss_triton.NUM_WARPS = rows_per_program, block, warps
                ms = mean_ms(lambda: loss_triton.ce_grad_fp8(logits, targets, -100, scale, log_scale))
                traffic = logits.numel() * (2 * logits.element_size() + 1)
                print(
                    json.dumps(
                        {
                            "rows": rows_per_program,
                            "block": block,
                            "warps": warps,
                            "triton": ms,
                            "tb_per_s": round(traffic / ms / 1e9, 2),
                        }
                    )
                )


if __name__ == "__main__":
    modes = {"transpose": transpose_rows, "loss": loss_rows}
    modes.get(sys.argv[1] if len(sys.argv) > 1 else "", main)()
