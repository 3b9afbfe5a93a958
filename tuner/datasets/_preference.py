"""Preference datasets for DPO-style recipes: rows of a chosen and a rejected response to one
prompt -> ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}``.

The prompt is masked (labels -100) unless ``train_on_input``; only the responses' tokens count in
the log-probabilities the preference loss compares. Packing is not supported (pairs are padded).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from torch.utils.data import Dataset

from tuner.data.messages import ChosenRejectedToMessages, validate_messages
from tuner.datasets._loading import filter_rows, where
from tuner.datasets._loading import load_hf_dataset as load_dataset
from tuner.datasets._sft import labels_from_mask
from tuner.errors import ConfigError, DataError

#: Stack Exchange Paired's columns (torchtune's default for `stack_exchange_paired_dataset`).
STACK_EXCHANGE_COLUMNS = {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}


class PreferenceDataset(Dataset):
    """Rows -> ``{"chosen", "rejected"}`` messages (``message_transform``) -> tokens and labels of each.
    ``source`` is what `load_hf_dataset` loads (a local format with ``data_files``, a Hub name) or a list
    of rows.

    A response whose tokens were all cut off by ``tokenizer.max_seq_len`` (nothing left to score) is
    an error naming the row, not a silent zero log-probability."""

    def __init__(
        self,
        *,
        source: str | Sequence[Mapping[str, Any]],
        message_transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        tokenizer: Any,
        filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
        packed: bool = False,
        split: str = "train",
        **load_dataset_kwargs: Any,
    ) -> None:
        if packed:
            raise ConfigError("preference datasets cannot be packed", "set dataset.packed=False")
        if isinstance(source, (list, tuple)):  # rows made in Python (the quickstart's)
            self._where, self._data = "the dataset's rows", list(source)
        else:
            self._where = where(source, load_dataset_kwargs.get("data_files"))
            self._data = load_dataset(source, split=split, **load_dataset_kwargs)
        if filter_fn is not None:
            self._data = filter_rows(self._data, filter_fn, source)
        self._message_transform = message_transform
        self._tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        try:
            pair = self._message_transform(self._data[index])
            out = {}
            for key in ("chosen", "rejected"):
                validate_messages(pair[key])
                tokens, mask = self._tokenizer.tokenize_messages(pair[key])
                labels = labels_from_mask(tokens, mask)
                if all(m for m in mask[1:]):
                    raise DataError(
                        f"the {key} response has no token left to score (max_seq_len "
                        f"{getattr(self._tokenizer, 'max_seq_len', None)} cuts it off)",
                        "raise tokenizer.max_seq_len, or drop long rows with filter_fn",
                    )
                out[f"{key}_input_ids"], out[f"{key}_labels"] = list(tokens), labels
        except DataError as e:
            raise DataError(f"{self._where}, row {index}: {e.message}", e.fix) from None
        return out


def preference_dataset(
    tokenizer: Any,
    *,
    source: str,
    column_map: Optional[Mapping[str, str]] = None,
    train_on_input: bool = False,
    new_system_prompt: Optional[str] = None,
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    packed: bool = False,
    split: str = "train",
    **load_dataset_kwargs: Any,
) -> PreferenceDataset:
    """A preference dataset from local JSON / CSV / parquet (``source="json"`` + ``data_files``) or a
    Hub name. ``chosen`` / ``rejected`` are conversations (``[{"role", "content"}, ...]``, the prompt
    inside each, torchtune's layout) or texts answering the ``prompt`` column (TRL's layout);
    ``column_map`` maps "chosen", "rejected", "prompt" to the dataset's column names."""
    transform = ChosenRejectedToMessages(train_on_input, column_map, new_system_prompt)
    options = {"message_transform": transform, "tokenizer": tokenizer, "filter_fn": filter_fn, "packed": packed}
    return PreferenceDataset(source=source, split=split, **options, **load_dataset_kwargs)


def stack_exchange_paired_dataset(
    tokenizer: Any,
    *,
    source: str = "lvwerra/stack-exchange-paired",
    column_map: Optional[Mapping[str, str]] = None,
    train_on_input: bool = False,
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    split: str = "train",
    **load_dataset_kwargs: Any,
) -> PreferenceDataset:
    """torchtune's builder: a question and two text answers (``question``, ``response_j`` chosen,
    ``response_k`` rejected), from the Hub dataset (its ``data/rl`` folder) or any file of that layout
    (`preference_dataset` with those columns; torchtune's transform is
    `tuner.data.StackExchangePairedToMessages`)."""
    if source == "lvwerra/stack-exchange-paired":
        load_dataset_kwargs.setdefault("data_dir", "data/rl")
    columns = column_map or STACK_EXCHANGE_COLUMNS
    options = {"column_map": columns, "train_on_input": train_on_input, "filter_fn": filter_fn, "split": split}
    return preference_dataset(tokenizer, source=source, **options, **load_dataset_kwargs)
