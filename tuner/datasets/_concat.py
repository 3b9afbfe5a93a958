"""`ConcatDataset`: several datasets one after the other (torchtune's class)."""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Any, Sequence

from torch.utils.data import Dataset

from tuner.data.packing import PackedDataset
from tuner.errors import DataError


class ConcatDataset(Dataset):
    """The samples of ``datasets`` in order. All packed or none (``packed`` says which): a batch
    mixes samples of different datasets, and packs and plain samples do not collate together."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        packed = [isinstance(ds, PackedDataset) for ds in datasets]
        if any(packed) and not all(packed):
            raise DataError(
                "ConcatDataset can't process a mix of packed and non-packed datasets",
                "set packed the same way for every dataset in the list",
            )
        self._datasets = list(datasets)
        self.packed = all(packed) and bool(packed)
        self._ends = list(accumulate(len(ds) for ds in self._datasets))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, int):
            raise TypeError(f"ConcatDataset indices must be integers, got {type(index).__name__}")
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ConcatDataset of {len(self)} samples")
        i = bisect_right(self._ends, index)
        return self._datasets[i][index - (self._ends[i - 1] if i else 0)]
