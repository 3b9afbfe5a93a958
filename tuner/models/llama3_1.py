"""Llama 3.1 (8B, 70B, 405B): Llama 3 with "llama3" rope scaling (factor 8) and 128k context."""

from __future__ import annotations

from tuner.models import llama3
from tuner.models._builder import llama3_rope_scaling, llama_mlp_width
from tuner.models.spec import Size

# The released sizes, one a row (a table: ruff format leaves it as written): Llama 3's 8B and 70B shapes
# with a 128k context, and 405B.
# fmt: off
_SIZES = Size.table(
    llama3.SIZE_COLUMNS,
    ("8b",   "Llama 3.1 8B Instruct",    32,  32,  4096, 14336,   8_030_261_248, "meta-llama/Llama-3.1-8B-Instruct",     4),
    ("70b",  "Llama 3.1 70B Instruct",   80,  64,  8192, 28672,  70_553_706_496, "meta-llama/Llama-3.1-70B-Instruct",   30),
    ("405b", "Llama 3.1 405B Instruct", 126, 128, 16384, 53248, 405_853_388_800, "meta-llama/Llama-3.1-405B-Instruct", 191),
    **llama3.SHARED_DIMS, max_seq_len=131_072,
)
# fmt: on

#: Llama 3.1's "llama3" rope scaling, as builder arguments (`tuner.models._builder.llama3_rope_scaling`).
ROPE_SCALING = dict(scale_factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, old_context_len=8192)

FAMILY = llama3.FAMILY.variant(
    name="llama3_1",
    title="Llama 3.1",
    aliases=("LLAMA3_1",),
    defaults=dict(
        attn_dropout=0.0,
        rope_base=500_000.0,
        intermediate_dim=None,
        norm_eps=1e-5,
        **ROPE_SCALING,
        tie_word_embeddings=False,
    ),
    derive=(llama_mlp_width, llama3_rope_scaling),
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
