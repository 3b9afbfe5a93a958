"""Conversation datasets: OpenAI ``messages`` lists or ShareGPT ``conversations``."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from tuner.data.messages import OpenAIToMessages, ShareGPTToMessages
from tuner.datasets._sft import build_sft_dataset
from tuner.errors import ConfigError

_STYLES = {"openai": (OpenAIToMessages, "messages"), "sharegpt": (ShareGPTToMessages, "conversations")}


def chat_dataset(
    tokenizer: Any,
    source: str,
    conversation_style: str = "openai",
    conversation_column: Optional[str] = None,
    data_files: Any = None,
    column_map: Optional[Mapping[str, str]] = None,
    train_on_input: bool = False,
    new_system_prompt: Optional[str] = None,
    packed: bool = False,
    split: str = "train",
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    **load_dataset_kwargs: Any,
):
    """Multi-turn conversations in the tokenizer's chat format.

    ``conversation_style``: "openai" (``[{"role", "content"}]`` in column ``messages``) or
    "sharegpt" (``[{"from", "value"}]`` in column ``conversations``). ``conversation_column``
    (or ``column_map={"messages"|"conversations": ...}``) names another column.
    ``train_on_input=False`` trains on assistant turns only.
    """
    if conversation_style not in _STYLES:
        raise ConfigError(f"unknown conversation_style {conversation_style!r}", f"use one of {', '.join(_STYLES)}")
    cls, default_col = _STYLES[conversation_style]
    cm = dict(column_map or {})
    if conversation_column is not None:
        cm[default_col] = conversation_column
    transform = cls(train_on_input=train_on_input, column_map=cm, new_system_prompt=new_system_prompt)
    required = [(transform.column_map[default_col], default_col)]
    return build_sft_dataset(
        tokenizer, transform, required, packed, source, data_files, filter_fn, split, **load_dataset_kwargs
    )


def slimorca_dataset(tokenizer: Any, *, source: str = "Open-Orca/SlimOrca-Dedup", **kwargs: Any):
    """SlimOrca (deduplicated): ShareGPT ``conversations`` in the tokenizer's chat format. Other
    arguments as `chat_dataset`'s."""
    return chat_dataset(tokenizer, source=source, conversation_style="sharegpt", **kwargs)
