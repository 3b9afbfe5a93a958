"""torchtune's named datasets: a hub dataset with its columns mapped onto a generic builder.

Each takes torchtune's arguments; ``source`` may be a local format (json, csv, parquet) with
``data_files`` like every builder. A prompt template (e.g. ``tuner.data.prompt_templates.SummarizeTemplate``
for samsum) goes on the tokenizer, as in torchtune's configs.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from tuner.datasets._chat import chat_dataset
from tuner.datasets._instruct import instruct_dataset
from tuner.datasets._text_completion import text_completion_dataset
from tuner.errors import ConfigError


def grammar_dataset(tokenizer: Any, *, source: str = "liweili/c4_200m", column_map: Optional[Mapping[str, str]] = None,
                    train_on_input: bool = False, new_system_prompt: Optional[str] = None, packed: bool = False,
                    filter_fn: Optional[Callable] = None, split: str = "train", **load_dataset_kwargs: Any):
    """Grammar correction pairs (columns ``input`` -> ``output``)."""
    return instruct_dataset(tokenizer, source=source, column_map=column_map, train_on_input=train_on_input,
                            new_system_prompt=new_system_prompt, packed=packed, filter_fn=filter_fn, split=split,
                            **load_dataset_kwargs)


def samsum_dataset(tokenizer: Any, *, source: str = "Samsung/samsum", column_map: Optional[Mapping[str, str]] = None,
                   train_on_input: bool = False, new_system_prompt: Optional[str] = None, packed: bool = False,
                   filter_fn: Optional[Callable] = None, split: str = "train", **load_dataset_kwargs: Any):
    """Dialogue summarisation (``dialogue`` -> ``summary``)."""
    return instruct_dataset(tokenizer, source=source, column_map=column_map or {"input": "dialogue", "output": "summary"},
                            train_on_input=train_on_input, new_system_prompt=new_system_prompt, packed=packed,
                            filter_fn=filter_fn, split=split, **load_dataset_kwargs)


def slimorca_dataset(tokenizer: Any, *, source: str = "Open-Orca/SlimOrca-Dedup", column_map: Optional[Mapping[str, str]] = None,
                     train_on_input: bool = False, new_system_prompt: Optional[str] = None, packed: bool = False,
                     filter_fn: Optional[Callable] = None, split: str = "train", **load_dataset_kwargs: Any):
    """ShareGPT-style conversations (column ``conversations``)."""
    return chat_dataset(tokenizer, source=source, conversation_style="sharegpt", column_map=column_map,
                        train_on_input=train_on_input, new_system_prompt=new_system_prompt, packed=packed,
                        filter_fn=filter_fn, split=split, **load_dataset_kwargs)


def _no_max_seq_len(max_seq_len: Optional[int]) -> None:
    if max_seq_len is not None:
        raise ConfigError(f"dataset.max_seq_len={max_seq_len}: tuner cuts text at the tokenizer's max_seq_len",
                          fix=f"set tokenizer.max_seq_len={max_seq_len} and remove dataset.max_seq_len")


def cnn_dailymail_articles_dataset(tokenizer: Any, source: str = "ccdv/cnn_dailymail", max_seq_len: Optional[int] = None,
                                   filter_fn: Optional[Callable] = None, split: str = "train", **load_dataset_kwargs: Any):
    """News articles as plain text (column ``article``, dataset version 3.0.0)."""
    _no_max_seq_len(max_seq_len)
    load_dataset_kwargs.setdefault("name", "3.0.0")
    return text_completion_dataset(tokenizer, source=source, column="article", filter_fn=filter_fn, split=split,
                                   **load_dataset_kwargs)


def wikitext_dataset(tokenizer: Any, source: str = "EleutherAI/wikitext_document_level", subset: str = "wikitext-103-v1",
                     max_seq_len: Optional[int] = None, packed: bool = False, filter_fn: Optional[Callable] = None,
                     split: str = "train", **load_dataset_kwargs: Any):
    """Wikipedia pages as plain text (column ``page``)."""
    _no_max_seq_len(max_seq_len)
    return text_completion_dataset(tokenizer, source=source, column="page", name=subset, packed=packed,
                                   filter_fn=filter_fn, split=split, **load_dataset_kwargs)
