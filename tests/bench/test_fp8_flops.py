"""The MFU numerator counts an FP8 base (one byte per weight) as the parameters it stands for."""

from __future__ import annotations

from benchmarks.flops import training_flops_per_token
from tuner.models.smollm2 import lora_smollm2

DIMS = dict(
    vocab_size=256, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128, max_seq_len=256
)


def test_fp8_base_counts_like_the_dense_base():
    lora = dict(lora_attn_modules=["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=4)
    dense = training_flops_per_token(lora_smollm2(**lora, **DIMS), seq_len=128, full=False)
    fp8 = training_flops_per_token(lora_smollm2(**lora, base_dtype="fp8", **DIMS), seq_len=128, full=False)
    assert fp8 == dense
