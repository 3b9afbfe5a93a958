"""Llama 3.2 text (1B, 3B): Llama 3.1 architecture, rope scaling factor 32, tied embeddings."""

from __future__ import annotations

from tuner.models import llama3, llama3_1
from tuner.models.spec import Size

# The released sizes, one a row (a table: ruff format leaves it as written).
# fmt: off
_SIZES = Size.table(
    llama3.SIZE_COLUMNS,
    ("1b", "Llama 3.2 1B Instruct", 16, 32, 2048, 8192, 1_235_814_400, "meta-llama/Llama-3.2-1B-Instruct", 1),
    ("3b", "Llama 3.2 3B Instruct", 28, 24, 3072, 8192, 3_212_749_824, "meta-llama/Llama-3.2-3B-Instruct", 2),
    **llama3.SHARED_DIMS, max_seq_len=131_072,
)
# fmt: on

FAMILY = llama3_1.FAMILY.variant(
    name="llama3_2",
    title="Llama 3.2",
    model_type="LLAMA3_2",
    aliases=(),
    defaults={**llama3_1.FAMILY.defaults, "scale_factor": 32.0, "tie_word_embeddings": True},
    sizes=_SIZES,
)
globals().update(FAMILY.builders)
