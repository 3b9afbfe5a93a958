"""SFTDataset: rows -> messages -> tokens and labels; TextCompletionDataset for plain text."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from torch.utils.data import Dataset

from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.datasets._loading import load_hf_dataset
from tuner.errors import DataError


def labels_from_mask(tokens: Sequence[int], mask: Sequence[bool]) -> list[int]:
    """Labels aligned with tokens: the token where trained, -100 where masked."""
    return [CROSS_ENTROPY_IGNORE_IDX if m else t for t, m in zip(tokens, mask)]


class SFTDataset(Dataset):
    """Supervised fine-tuning data: each row becomes ``{"tokens": [...], "labels": [...]}``.

    ``message_transform`` turns a row into ``{"messages": [...]}``; ``model_transform`` (the
    tokenizer) adds ``tokens`` and ``mask``. ``required_columns`` are checked once up front so a
    wrong ``column_map`` fails at build time, not mid-training. ``filter_fn(row) -> bool`` keeps rows.
    """

    def __init__(
        self,
        *,
        source: str,
        message_transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        model_transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
        required_columns: Sequence[tuple[str, str]] = (),
        split: str = "train",
        **load_dataset_kwargs: Any,
    ) -> None:
        self.source = source
        self._files = load_dataset_kwargs.get("data_files")
        self._data = load_hf_dataset(source, split=split, **load_dataset_kwargs)
        self._check_columns(required_columns)
        if filter_fn is not None:
            self._data = self._data.filter(filter_fn)
            if len(self._data) == 0:
                raise DataError(f"filter_fn removed every row of {source!r}", "loosen filter_fn")
        self._message_transform = message_transform
        self._model_transform = model_transform

    def _check_columns(self, required: Sequence[tuple[str, str]]) -> None:
        columns = set(self._data.column_names or [])
        for column, expected in required:
            if column not in columns:
                hint = f"column_map={{'{expected}': '<your column>'}}" if column == expected else f"fix column_map['{expected}']"
                raise DataError(
                    f"{self._where()} has no column {column!r} (columns: {sorted(columns)})",
                    f"rename the column in the data or pass {hint}",
                )

    def _where(self) -> str:
        """The data file(s) when local, else the dataset name: what error messages point at."""
        if self._files is not None:
            return f"data file {self._files}" if isinstance(self._files, str) else f"data files {self._files}"
        return f"dataset {self.source!r}"

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        row = self._data[index]
        try:
            sample = self._model_transform(self._message_transform(row))
        except DataError as e:
            raise DataError(f"{self._where()}, row {index}: {e.message}", e.fix) from None
        tokens, mask = list(sample["tokens"]), list(sample["mask"])
        if not tokens:
            raise DataError(f"{self._where()}, row {index}: no tokens", "drop empty rows with filter_fn")
        return {"tokens": tokens, "labels": labels_from_mask(tokens, mask)}


class TextCompletionDataset(Dataset):
    """Plain text: each row's ``column`` -> BOS + tokens (+ EOS), truncated to the tokenizer's max_seq_len.

    All tokens are trained on (labels = tokens).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        source: str,
        column: str = "text",
        add_eos: bool = True,
        filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
        split: str = "train",
        **load_dataset_kwargs: Any,
    ) -> None:
        self.source = source
        self._tokenizer = tokenizer
        self._column = column
        self._add_eos = add_eos
        self._data = load_hf_dataset(source, split=split, **load_dataset_kwargs)
        if column not in (self._data.column_names or []):
            raise DataError(
                f"dataset {source!r} has no column {column!r} (columns: {sorted(self._data.column_names or [])})",
                "pass column=<the text column>",
            )
        if filter_fn is not None:
            self._data = self._data.filter(filter_fn)
            if len(self._data) == 0:
                raise DataError(f"filter_fn removed every row of {source!r}", "loosen filter_fn")

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        text = self._data[index][self._column]
        if not isinstance(text, str):
            raise DataError(
                f"dataset {self.source!r}, row {index}: column {self._column!r} must be a string, got {type(text).__name__}",
                "clean the data or drop such rows with filter_fn",
            )
        tokens = self._tokenizer.encode(text, add_bos=True, add_eos=self._add_eos)
        max_len = getattr(self._tokenizer, "max_seq_len", None)
        if max_len is not None:
            tokens = tokens[:max_len]
        return {"tokens": tokens, "labels": list(tokens)}
