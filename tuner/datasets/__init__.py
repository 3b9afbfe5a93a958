"""Dataset builders for YAML configs: ``tuner.datasets.alpaca_dataset``, ``instruct_dataset``,
``chat_dataset``, ``text_completion_dataset``, ... Each loads through ``datasets.load_dataset``
(imported on first use) and yields ``{"tokens", "labels"}`` samples, or packs with ``packed=True``.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "alpaca_dataset": "tuner.datasets._instruct",
    "alpaca_cleaned_dataset": "tuner.datasets._instruct",
    "instruct_dataset": "tuner.datasets._instruct",
    "chat_dataset": "tuner.datasets._chat",
    "text_completion_dataset": "tuner.datasets._text_completion",
    "SFTDataset": "tuner.datasets._sft",
    "TextCompletionDataset": "tuner.datasets._sft",
    "load_hf_dataset": "tuner.datasets._loading",
    "PackedDataset": "tuner.data.packing",
    "quickstart_dataset": "tuner.datasets._quickstart",
    "grammar_dataset": "tuner.datasets._named",
    "samsum_dataset": "tuner.datasets._named",
    "slimorca_dataset": "tuner.datasets._named",
    "cnn_dailymail_articles_dataset": "tuner.datasets._named",
    "wikitext_dataset": "tuner.datasets._named",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
