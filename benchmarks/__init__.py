"""Benchmark components: synthetic data, a tokenizer stand-in and random-init weights, so a
recipe config can be timed on any model shape without downloading it (`scripts/benchmark.py`)."""

from benchmarks.components import NullTokenizer, RandomInitCheckpointer, synthetic_dataset
from benchmarks.flops import matmul_tflops, training_flops_per_token

__all__ = ["NullTokenizer", "RandomInitCheckpointer", "matmul_tflops", "synthetic_dataset", "training_flops_per_token"]
