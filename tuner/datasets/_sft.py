"""SFTDataset: rows -> messages -> tokens and labels.

Rows come from ``load_dataset`` (this module's name for `load_hf_dataset`, the checked
``datasets.load_dataset``); any indexable sequence of row mappings works too, e.g. a list.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from torch.utils.data import Dataset

from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX, validate_messages
from tuner.datasets._loading import filter_rows, where
from tuner.datasets._loading import load_hf_dataset as load_dataset
from tuner.datasets._packing import maybe_pack
from tuner.errors import DataError


def labels_from_mask(tokens: Sequence[int], mask: Sequence[bool]) -> list[int]:
    """Labels aligned with tokens: the token where trained, -100 where masked."""
    return [CROSS_ENTROPY_IGNORE_IDX if m else t for t, m in zip(tokens, mask)]


class SFTDataset(Dataset):
    """Supervised fine-tuning data: each row becomes ``{"tokens": [...], "labels": [...]}``.

    ``message_transform`` turns a row into ``{"messages": [...]}`` (checked with
    `validate_messages`); ``model_transform`` (the tokenizer) adds ``tokens`` and ``mask``.
    ``required_columns`` are checked once up front so a wrong ``column_map`` fails at build time,
    not mid-training. ``filter_fn(row) -> bool`` keeps rows.
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
        self._where = where(source, load_dataset_kwargs.get("data_files"))
        self._data = load_dataset(source, split=split, **load_dataset_kwargs)
        self._check_columns(required_columns)
        if filter_fn is not None:
            self._data = filter_rows(self._data, filter_fn, source)
        self._message_transform = message_transform
        self._model_transform = model_transform

    def _check_columns(self, required: Sequence[tuple[str, str]]) -> None:
        columns = getattr(self._data, "column_names", None)
        if columns is None:  # rows without a schema (a list): checked row by row
            return
        for column, expected in required:
            if column not in columns:
                hint = (
                    f"column_map={{'{expected}': '<your column>'}}"
                    if column == expected
                    else f"fix column_map['{expected}']"
                )
                raise DataError(
                    f"{self._where} has no column {column!r} (columns: {sorted(columns)})",
                    f"rename the column in the data or pass {hint}",
                )

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        try:
            sample = self._message_transform(self._data[index])
            if "messages" in sample:
                validate_messages(sample["messages"])
            sample = self._model_transform(sample)
            if "tokens" not in sample or "mask" not in sample:
                raise DataError(
                    f"model_transform returned the following keys: {', '.join(sample)}. Must return 'tokens' and "
                    "'mask' as keys.",
                    "the model transform (tokenizer) must add tokens and mask to the sample",
                )
        except DataError as e:
            raise DataError(f"{self._where}, row {index}: {e.message}", e.fix) from None
        tokens, mask = list(sample["tokens"]), list(sample["mask"])
        if not tokens:
            raise DataError(f"{self._where}, row {index}: no tokens", "drop empty rows with filter_fn")
        return {"tokens": tokens, "labels": labels_from_mask(tokens, mask)}


def build_sft_dataset(
    tokenizer: Any,
    message_transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    required_columns: Sequence[tuple[str, str]],
    packed: bool,
    source: str,
    data_files: Any,
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]],
    split: str,
    **load_dataset_kwargs: Any,
) -> Any:
    """The SFTDataset of one builder (chat, instruct, alpaca), packed when ``packed=True``: the one
    place where the public dataset builders turn their arguments into a dataset (the arguments
    after ``required_columns`` are the builders' own, in their order)."""
    ds = SFTDataset(
        source=source,
        data_files=data_files,
        message_transform=message_transform,
        model_transform=tokenizer,
        filter_fn=filter_fn,
        required_columns=required_columns,
        split=split,
        **load_dataset_kwargs,
    )
    return maybe_pack(ds, tokenizer, packed)
