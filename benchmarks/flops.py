"""FLOP counts and the measured matmul rate that MFU is reported against."""

from __future__ import annotations

import time

import torch
from torch import nn


def training_flops_per_token(model: nn.Module, seq_len: int, full: bool) -> float:
    """Model FLOPs per trained token: 6N + 12·L·d·s for full fine-tuning, 4N + 8·L·d·s for LoRA
    (no base weight gradients), N = parameters outside the token embedding (the anchor figures'
    formula, docs/benchmarks.md)."""
    n = 0
    for name, p in model.named_parameters():
        if "tok_embeddings" not in name:
            n += p.numel()
    for name, b in model.named_buffers():
        if name.endswith("weight_nf4"):
            n += b.numel() * 2  # two 4-bit weights per byte
        elif name.endswith("weight_fp8"):
            n += b.numel()  # one FP8 weight per byte
    layers = len(model.layers)
    dim = model.tok_embeddings.embedding_dim
    if getattr(model, "tie_word_embeddings", False):
        n += model.tok_embeddings.weight.numel()  # the output projection is the embedding matrix
    return (6 * n + 12 * layers * dim * seq_len) if full else (4 * n + 8 * layers * dim * seq_len)


def matmul_tflops(n: int = 8192, iters: int = 10, device: str = "cuda") -> float:
    """Measured bf16 n x n x n matmul rate (TFLOP/s) on this GPU, the MFU denominator."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12
