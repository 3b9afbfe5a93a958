"""Batch collation: right-padded batches of samples, and batches of packs."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.data.packing import document_ids, packed_block_causal_mask, packed_flex_block_mask


def padded_collate_sft(
    batch: Sequence[Mapping[str, Any]], padding_idx: int = 0, ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX
) -> dict[str, torch.Tensor]:
    """``[{"tokens", "labels"}]`` -> ``{"tokens", "labels"}`` LongTensors ``[b, longest]``, right-padded.

    Tokens are padded with ``padding_idx``, labels with ``ignore_idx`` (no loss on padding). A
    causal model needs no mask for right padding: real tokens never look ahead at it.
    """
    tokens = [torch.as_tensor(x["tokens"], dtype=torch.long) for x in batch]
    labels = [torch.as_tensor(x["labels"], dtype=torch.long) for x in batch]
    return {
        "tokens": pad_sequence(tokens, batch_first=True, padding_value=padding_idx),
        "labels": pad_sequence(labels, batch_first=True, padding_value=ignore_idx),
    }


def padded_collate_packed(
    batch: Sequence[Mapping[str, Any]], use_flex: bool = False, device: Optional[torch.device | str] = None
) -> dict[str, Any]:
    """Packs from `PackedDataset` -> ``{"tokens", "labels", "input_pos", "mask"}``.

    ``mask`` is a bool ``[b, s, s]`` block-diagonal causal mask (True = may attend), or with
    ``use_flex=True`` a FlexAttention ``BlockMask`` built on ``device`` (default: CUDA if
    available), which the model's attention takes as well.
    """
    out = {
        "tokens": torch.stack([torch.as_tensor(x["tokens"], dtype=torch.long) for x in batch]),
        "labels": torch.stack([torch.as_tensor(x["labels"], dtype=torch.long) for x in batch]),
        "input_pos": torch.stack([torch.as_tensor(x["input_pos"], dtype=torch.long) for x in batch]),
    }
    seq_lens = [x["seq_lens"] for x in batch]
    if use_flex:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        out["mask"] = packed_flex_block_mask(document_ids(seq_lens), device=device)
    else:
        out["mask"] = packed_block_causal_mask(seq_lens)
    return out
