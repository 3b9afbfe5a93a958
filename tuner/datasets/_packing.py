"""Wrap a dataset in PackedDataset when ``packed=True``."""

from __future__ import annotations

from typing import Any

from tuner.data.packing import PackedDataset
from tuner.errors import DataError


def maybe_pack(ds: Any, tokenizer: Any, packed: bool, split_across_pack: bool = False) -> Any:
    """``ds`` itself, or packed into sequences of ``tokenizer.max_seq_len``."""
    if not packed:
        return ds
    max_seq_len = getattr(tokenizer, "max_seq_len", None)
    if max_seq_len is None:
        raise DataError(
            "packed=True needs the tokenizer's max_seq_len (the pack length)", "set tokenizer.max_seq_len in the config"
        )

    pad = getattr(tokenizer, "pad_id", 0)
    return PackedDataset(
        ds, max_seq_len=max_seq_len, padding_idx=0 if pad is None else pad, split_across_pack=split_across_pack
    )
