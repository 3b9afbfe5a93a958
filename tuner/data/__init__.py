"""Data: messages and transforms, prompt templates, tokenizers, packing and collate.

Names are imported on first use, so ``import tuner.data`` stays cheap (no torch, datasets,
sentencepiece or tiktoken until needed).
"""

from __future__ import annotations

from tuner._lazy import lazy_exports

_EXPORTS = {
    # messages
    "Message": "tuner.data.messages",
    "ROLES": "tuner.data.messages",
    "CROSS_ENTROPY_IGNORE_IDX": "tuner.data.messages",
    "validate_messages": "tuner.data.messages",
    "Role": "tuner.data.messages",
    "InputOutputToMessages": "tuner.data.messages",
    "ChosenRejectedToMessages": "tuner.data.messages",
    "StackExchangePairedToMessages": "tuner.data.messages",
    "AlpacaToMessages": "tuner.data.messages",
    "ShareGPTToMessages": "tuner.data.messages",
    "OpenAIToMessages": "tuner.data.messages",
    "TextToMessages": "tuner.data.messages",
    "ALPACA_PROMPT_INPUT": "tuner.data.messages",
    "ALPACA_PROMPT_NO_INPUT": "tuner.data.messages",
    # prompt templates
    "PromptTemplate": "tuner.data.prompt_templates",
    "PromptTemplateInterface": "tuner.data.prompt_templates",
    "ChatMLTemplate": "tuner.data.prompt_templates",
    "QuestionAnswerTemplate": "tuner.data.prompt_templates",
    "SummarizeTemplate": "tuner.data.prompt_templates",
    "GrammarErrorCorrectionTemplate": "tuner.data.prompt_templates",
    # collate and packing
    "left_pad_sequence": "tuner.data.collate",
    "padded_collate": "tuner.data.collate",
    "padded_collate_dpo": "tuner.data.collate",
    "padded_collate_tiled_images_and_mask": "tuner.data.collate",
    "padded_collate_sft": "tuner.data.collate",
    "padded_collate_packed": "tuner.data.collate",
    "PackedDataset": "tuner.data.packing",
    "packed_block_causal_mask": "tuner.data.packing",
    "packed_flex_block_mask": "tuner.data.packing",
    "document_ids": "tuner.data.packing",
    # helpers
    "truncate": "tuner.data.utils",
    "load_image": "tuner.data.utils",
    "format_content_with_images": "tuner.data.utils",
    "Transform": "tuner.data.transforms",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
