"""Llama 3.3 (70B): the Llama 3.1 architecture with new weights, under torchtune's names."""

from __future__ import annotations

from tuner.models import llama3_1
from tuner.models.spec import Size

FAMILY = llama3_1.FAMILY.variant(
    name="llama3_3",
    title="Llama 3.3",
    aliases=("LLAMA3_3",),
    sizes=(
        Size(
            "70b",
            "Llama 3.3 70B Instruct",
            llama3_1.FAMILY.size("70b").dims,
            params=70_553_706_496,
            hf_repo="meta-llama/Llama-3.3-70B-Instruct",
            shards=30,
        ),
    ),
)
globals().update(FAMILY.builders)
