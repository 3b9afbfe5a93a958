"""Llama 3.1 (8B, 70B, 405B): Llama 3 with "llama3" rope scaling (factor 8) and 128k context."""

from __future__ import annotations

from dataclasses import replace

from tuner.models import llama3
from tuner.models._builder import llama3_rope_scaling, llama_mlp_width
from tuner.models.spec import Size

FAMILY = replace(
    llama3.FAMILY,
    name="llama3_1",
    title="Llama 3.1",
    aliases=("LLAMA3_1",),
    module="",
    defaults=dict(
        attn_dropout=0.0,
        rope_base=500_000.0,
        intermediate_dim=None,
        norm_eps=1e-5,
        scale_factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        old_context_len=8192,
        tie_word_embeddings=False,
    ),
    derive=(llama_mlp_width, llama3_rope_scaling),
    sizes=(  # Llama 3's 8B and 70B shapes with a 128k context, and 405B
        Size(
            "8b",
            "Llama 3.1 8B Instruct",
            {**llama3.FAMILY.size("8b").dims, "max_seq_len": 131_072},
            params=8_030_261_248,
            hf_repo="meta-llama/Llama-3.1-8B-Instruct",
            shards=4,
        ),
        Size(
            "70b",
            "Llama 3.1 70B Instruct",
            {**llama3.FAMILY.size("70b").dims, "max_seq_len": 131_072},
            params=70_553_706_496,
            hf_repo="meta-llama/Llama-3.1-70B-Instruct",
            shards=30,
        ),
        Size(
            "405b",
            "Llama 3.1 405B Instruct",
            dict(
                vocab_size=128_256,
                num_layers=126,
                num_heads=128,
                num_kv_heads=8,
                embed_dim=16384,
                max_seq_len=131_072,
                intermediate_dim=53248,
            ),
            params=405_853_388_800,
            hf_repo="meta-llama/Llama-3.1-405B-Instruct",
            shards=191,
        ),
    ),
)
globals().update(FAMILY.builders)
