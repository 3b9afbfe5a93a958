"""The quickstart's own instruction dataset, shipped inside the package (no download), and the same rows
as preference pairs for the DPO quickstart."""

from __future__ import annotations

import json
from typing import Any, Mapping

from tuner.data.messages import ChosenRejectedToMessages
from tuner.data.quickstart import EVAL_FILE, TRAIN_FILE
from tuner.datasets._instruct import alpaca_dataset
from tuner.datasets._preference import PreferenceDataset
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


def explained_over_bare(row: Mapping[str, Any]) -> dict[str, str]:
    """A quickstart row as a preference pair in TRL's text layout: the explained answer (``ANSWER`` and
    ``WHY`` lines) is chosen over the bare ``ANSWER`` line, a style preference that carries over to
    questions not trained on (what the DPO quickstart shows)."""
    prompt = f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]
    return {"prompt": prompt, "chosen": row["output"], "rejected": row["output"].split("\n")[0]}


def quickstart_preference_dataset(tokenizer: Any, split: str = "train") -> Any:
    """The quickstart's rows as preference pairs (`explained_over_bare`), for the DPO recipes offline;
    ``split`` is ``train`` or ``eval`` as in `quickstart_dataset`."""
    files = {"train": TRAIN_FILE, "eval": EVAL_FILE}
    if split not in files:
        raise ConfigError(f"quickstart_preference_dataset: unknown split {split!r}", "use split: train or split: eval")
    rows = [explained_over_bare(r) for r in json.loads(files[split].read_text(encoding="utf-8"))]
    return PreferenceDataset(source=rows, message_transform=ChosenRejectedToMessages(), tokenizer=tokenizer)
