"""Llama 3.2 text (1B, 3B): Llama 3.1 architecture, rope scaling factor 32, tied embeddings."""

from __future__ import annotations

from dataclasses import replace

from tuner.models import llama3_1
from tuner.models.spec import Size

FAMILY = replace(
    llama3_1.FAMILY,
    name="llama3_2",
    title="Llama 3.2",
    model_type="LLAMA3_2",
    aliases=(),
    module="",
    defaults={**llama3_1.FAMILY.defaults, "scale_factor": 32.0, "tie_word_embeddings": True},
    sizes=(
        Size(
            "1b",
            "Llama 3.2 1B Instruct",
            dict(
                vocab_size=128_256,
                num_layers=16,
                num_heads=32,
                num_kv_heads=8,
                embed_dim=2048,
                max_seq_len=131_072,
                intermediate_dim=8192,
            ),
            params=1_235_814_400,
            hf_repo="meta-llama/Llama-3.2-1B-Instruct",
        ),
        Size(
            "3b",
            "Llama 3.2 3B Instruct",
            dict(
                vocab_size=128_256,
                num_layers=28,
                num_heads=24,
                num_kv_heads=8,
                embed_dim=3072,
                max_seq_len=131_072,
                intermediate_dim=8192,
            ),
            params=3_212_749_824,
            hf_repo="meta-llama/Llama-3.2-3B-Instruct",
            shards=2,
        ),
    ),
)
globals().update(FAMILY.builders)
