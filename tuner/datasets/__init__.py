"""Dataset builders for YAML configs: ``tuner.datasets.alpaca_dataset``, ``instruct_dataset``,
``chat_dataset``, ``text_completion_dataset``, ... Each loads through ``datasets.load_dataset``
(imported on first use) and yields ``{"tokens", "labels"}`` samples, or packs with ``packed=True``.
"""

from __future__ import annotations

from tuner._lazy import lazy_exports

_EXPORTS = {
    "alpaca_dataset": "tuner.datasets._instruct",
    "alpaca_cleaned_dataset": "tuner.datasets._instruct",
    "instruct_dataset": "tuner.datasets._instruct",
    "samsum_dataset": "tuner.datasets._instruct",
    "grammar_dataset": "tuner.datasets._instruct",
    "slimorca_dataset": "tuner.datasets._chat",
    "wikitext_dataset": "tuner.datasets._text_completion",
    "cnn_dailymail_articles_dataset": "tuner.datasets._text_completion",
    "ConcatDataset": "tuner.datasets._concat",
    "chat_dataset": "tuner.datasets._chat",
    "text_completion_dataset": "tuner.datasets._text_completion",
    "SFTDataset": "tuner.datasets._sft",
    "TextCompletionDataset": "tuner.datasets._text_completion",
    "load_hf_dataset": "tuner.datasets._loading",
    "PackedDataset": "tuner.data.packing",
    "quickstart_dataset": "tuner.datasets._quickstart",
    "quickstart_preference_dataset": "tuner.datasets._quickstart",
    "PreferenceDataset": "tuner.datasets._preference",
    "preference_dataset": "tuner.datasets._preference",
    "stack_exchange_paired_dataset": "tuner.datasets._preference",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
