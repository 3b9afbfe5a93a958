"""Instruction datasets: alpaca (instruction/input/output) and generic input/output columns."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from tuner.data.messages import AlpacaToMessages, InputOutputToMessages
from tuner.datasets._sft import build_sft_dataset


def alpaca_dataset(
    tokenizer: Any,
    source: str = "tatsu-lab/alpaca",
    data_files: Any = None,
    column_map: Optional[Mapping[str, str]] = None,
    train_on_input: bool = True,
    packed: bool = False,
    split: str = "train",
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    **load_dataset_kwargs: Any,
):
    """Alpaca-style rows (``instruction``, ``input``, ``output``) in the standard Alpaca prompt.

    ``source``: a hub name (default tatsu-lab/alpaca) or a local format (json, csv, parquet) with
    ``data_files``. ``column_map`` maps instruction/input/output to the data's column names.
    ``train_on_input=False`` leaves the prompt out of the loss. ``packed=True`` packs samples into
    sequences of ``tokenizer.max_seq_len``.
    """
    transform = AlpacaToMessages(train_on_input=train_on_input, column_map=column_map)
    cm = transform.column_map
    required = [(cm["instruction"], "instruction"), (cm["output"], "output")]
    if column_map and "input" in column_map:
        required.append((cm["input"], "input"))
    return build_sft_dataset(
        tokenizer, transform, required, packed, source, data_files, filter_fn, split, **load_dataset_kwargs
    )


def alpaca_cleaned_dataset(tokenizer: Any, source: str = "yahma/alpaca-cleaned", **kwargs: Any):
    """`alpaca_dataset` over the cleaned Alpaca data (yahma/alpaca-cleaned)."""
    return alpaca_dataset(tokenizer, source=source, **kwargs)


def instruct_dataset(
    tokenizer: Any,
    source: str,
    data_files: Any = None,
    column_map: Optional[Mapping[str, str]] = None,
    train_on_input: bool = False,
    new_system_prompt: Optional[str] = None,
    packed: bool = False,
    split: str = "train",
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    **load_dataset_kwargs: Any,
):
    """Rows with an ``input`` (prompt) and an ``output`` (answer) column -> user/assistant turns.

    ``column_map`` maps input/output to the data's column names; ``new_system_prompt`` adds a
    system turn; ``train_on_input=False`` leaves the prompt out of the loss.
    """
    transform = InputOutputToMessages(
        train_on_input=train_on_input, column_map=column_map, new_system_prompt=new_system_prompt
    )
    cm = transform.column_map
    required = [(cm["input"], "input"), (cm["output"], "output")]
    return build_sft_dataset(
        tokenizer, transform, required, packed, source, data_files, filter_fn, split, **load_dataset_kwargs
    )


def samsum_dataset(
    tokenizer: Any, *, source: str = "Samsung/samsum", column_map: Optional[Mapping[str, str]] = None, **kwargs: Any
):
    """SAMSum dialogue summarization: ``dialogue`` -> ``summary`` (pair it with the tokenizer's
    ``prompt_template: tuner.data.SummarizeTemplate``). Other arguments as `instruct_dataset`'s."""
    return instruct_dataset(
        tokenizer, source=source, column_map=column_map or {"input": "dialogue", "output": "summary"}, **kwargs
    )


def grammar_dataset(tokenizer: Any, *, source: str = "liweili/c4_200m", **kwargs: Any):
    """Grammar correction (C4 200M): ``input`` -> ``output`` (pair it with ``prompt_template:
    tuner.data.GrammarErrorCorrectionTemplate``). Other arguments as `instruct_dataset`'s."""
    return instruct_dataset(tokenizer, source=source, **kwargs)
