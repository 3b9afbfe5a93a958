"""Data: messages and transforms, prompt templates, tokenizers, packing and collate.

Names are imported on first use, so ``import tuner.data`` stays cheap (no torch, datasets,
sentencepiece or tiktoken until needed).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # messages
    "Message": "tuner.data.messages",
    "ROLES": "tuner.data.messages",
    "CROSS_ENTROPY_IGNORE_IDX": "tuner.data.messages",
    "validate_messages": "tuner.data.messages",
    "InputOutputToMessages": "tuner.data.messages",
    "AlpacaToMessages": "tuner.data.messages",
    "ShareGPTToMessages": "tuner.data.messages",
    "OpenAIToMessages": "tuner.data.messages",
    "TextToMessages": "tuner.data.messages",
    "ALPACA_PROMPT_INPUT": "tuner.data.messages",
    "ALPACA_PROMPT_NO_INPUT": "tuner.data.messages",
    # prompt templates
    "PromptTemplate": "tuner.data.prompt_templates",
    "QuestionAnswerTemplate": "tuner.data.prompt_templates",
    "SummarizeTemplate": "tuner.data.prompt_templates",
    "GrammarErrorCorrectionTemplate": "tuner.data.prompt_templates",
    # collate and packing
    "padded_collate_sft": "tuner.data.collate",
    "padded_collate_packed": "tuner.data.collate",
    "PackedDataset": "tuner.data.packing",
    "packed_block_causal_mask": "tuner.data.packing",
    "packed_flex_block_mask": "tuner.data.packing",
    "document_ids": "tuner.data.packing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
