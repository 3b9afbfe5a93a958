"""Plain-text datasets for continued pre-training: `TextCompletionDataset` and its builders.

Rows come from ``load_dataset`` (this module's name for `load_hf_dataset`); any indexable
sequence of row mappings works too.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from torch.utils.data import Dataset

from tuner.datasets._loading import filter_rows, where
from tuner.datasets._loading import load_hf_dataset as load_dataset
from tuner.datasets._packing import maybe_pack
from tuner.errors import DataError


class TextCompletionDataset(Dataset):
    """Plain text: each row's ``column`` -> BOS + tokens (+ EOS), all trained on (labels = tokens).

    Truncated to ``max_seq_len`` or, when that is None, to the tokenizer's ``max_seq_len``.
    """

    def __init__(
        self,
        tokenizer: Any,
        source: str,
        column: str = "text",
        add_eos: bool = True,
        filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
        max_seq_len: Optional[int] = None,
        split: str = "train",
        **load_dataset_kwargs: Any,
    ) -> None:
        self.source = source
        self._tokenizer = tokenizer
        self._column = column
        self._add_eos = add_eos
        self._max_seq_len = max_seq_len
        self._where = where(source, load_dataset_kwargs.get("data_files"))
        self._data = load_dataset(source, split=split, **load_dataset_kwargs)
        columns = getattr(self._data, "column_names", None)
        if columns is not None and column not in columns:
            raise DataError(
                f"{self._where} has no column {column!r} (columns: {sorted(columns)})", "pass column=<the text column>"
            )
        if filter_fn is not None:
            self._data = filter_rows(self._data, filter_fn, source)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        row = self._data[index]
        text = row.get(self._column) if isinstance(row, Mapping) else None
        if not isinstance(text, str):
            raise DataError(
                f"{self._where}, row {index}: column {self._column!r} must be a string, got {type(text).__name__}",
                "clean the data or drop such rows with filter_fn",
            )
        tokens = self._tokenizer.encode(text, add_bos=True, add_eos=self._add_eos)
        max_len = self._max_seq_len if self._max_seq_len is not None else getattr(self._tokenizer, "max_seq_len", None)
        if max_len is not None:
            tokens = tokens[:max_len]
        return {"tokens": tokens, "labels": list(tokens)}


def text_completion_dataset(
    tokenizer: Any,
    source: str,
    column: str = "text",
    data_files: Any = None,
    add_eos: bool = True,
    packed: bool = False,
    split_across_pack: bool = True,
    split: str = "train",
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    max_seq_len: Optional[int] = None,
    **load_dataset_kwargs: Any,
):
    """Each row's ``column`` tokenized with BOS (and EOS), all tokens trained on.

    ``source="text"`` with ``data_files`` reads plain text files, one row per line.
    ``packed=True`` packs into sequences of ``tokenizer.max_seq_len``, splitting long documents
    across packs unless ``split_across_pack=False``.
    """
    if data_files is not None:
        load_dataset_kwargs["data_files"] = data_files
    ds = TextCompletionDataset(
        tokenizer,
        source=source,
        column=column,
        add_eos=add_eos,
        filter_fn=filter_fn,
        max_seq_len=max_seq_len,
        split=split,
        **load_dataset_kwargs,
    )
    return maybe_pack(ds, tokenizer, packed, split_across_pack=split_across_pack)


def wikitext_dataset(
    tokenizer: Any,
    source: str = "EleutherAI/wikitext_document_level",
    subset: str = "wikitext-103-v1",
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    split: str = "train",
    **load_dataset_kwargs: Any,
):
    """WikiText (document level): each page's text, for continued pre-training."""
    return text_completion_dataset(
        tokenizer,
        source=source,
        column="page",
        max_seq_len=max_seq_len,
        name=subset,
        packed=packed,
        filter_fn=filter_fn,
        split=split,
        **load_dataset_kwargs,
    )


def cnn_dailymail_articles_dataset(
    tokenizer: Any,
    source: str = "ccdv/cnn_dailymail",
    max_seq_len: Optional[int] = None,
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    split: str = "train",
    **load_dataset_kwargs: Any,
):
    """CNN / DailyMail 3.0.0: each article's text, for continued pre-training."""
    load_dataset_kwargs.setdefault("name", "3.0.0")
    return text_completion_dataset(
        tokenizer,
        source=source,
        column="article",
        max_seq_len=max_seq_len,
        filter_fn=filter_fn,
        split=split,
        **load_dataset_kwargs,
    )
