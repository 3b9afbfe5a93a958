"""The quickstart's own instruction dataset, shipped inside the package (no download)."""

from __future__ import annotations

from typing import Any

from tuner.data.quickstart import EVAL_FILE, TRAIN_FILE
from tuner.datasets._instruct import alpaca_dataset
from tuner.errors import ConfigError


def quickstart_dataset(tokenizer: Any, split: str = "train", train_on_input: bool = False, packed: bool = False) -> Any:
    """Alpaca-style rows whose answers all take the shape ``ANSWER: <x>\\nWHY: <sentence>``.

    ``split`` is ``train`` (320 rows) or ``eval`` (19 held-out rows); see tuner/data/quickstart.
    """
    files = {"train": TRAIN_FILE, "eval": EVAL_FILE}
    if split not in files:
        raise ConfigError(f"quickstart_dataset: unknown split {split!r}", "use split: train or split: eval")
    return alpaca_dataset(
        tokenizer,
        source="json",
        data_files=str(files[split]),
        train_on_input=train_on_input,
        packed=packed,
        split="train",
    )
