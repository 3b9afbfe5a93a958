"""Batch collation: padded batches of samples (right or left), preference pairs, and packs."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch.nn.utils.rnn import pad_sequence

from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.data.packing import document_ids, packed_block_causal_mask, packed_flex_block_mask
from tuner.errors import ConfigError, unsupported


def left_pad_sequence(
    sequences: Sequence[torch.Tensor], batch_first: bool = False, padding_value: float = 0
) -> torch.Tensor:
    """`torch.nn.utils.rnn.pad_sequence` that pads on the left (for generation prompts)."""
    flipped = [torch.flip(torch.as_tensor(s), dims=[0]) for s in sequences]
    return pad_sequence(flipped, batch_first=batch_first, padding_value=padding_value).flip(dims=[int(batch_first)])


def padded_collate(
    batch: Sequence[Mapping[str, Any]],
    *,
    pad_direction: str,
    keys_to_pad: Sequence[str],
    padding_idx: Union[int, Mapping[str, int]],
) -> dict[str, torch.Tensor]:
    """Stack a batch into tensors, padding the sequences under ``keys_to_pad`` to the longest.

    ``pad_direction``: "right" (training) or "left" (generation). ``padding_idx``: one value, or one
    per key of ``keys_to_pad``. Other keys (e.g. a class label per sample) are stacked as they are.
    """
    if pad_direction not in ("left", "right"):
        raise ConfigError(f"pad_direction should be one of 'left' or 'right' but found {pad_direction!r}")
    if isinstance(keys_to_pad, str) or not keys_to_pad:
        raise ConfigError(
            f"keys_to_pad should be a list of strings with at least one element, but found {keys_to_pad!r}"
        )
    keys = set(keys_to_pad)
    if isinstance(padding_idx, Mapping) and set(padding_idx) != keys:
        raise ConfigError(f"padding_idx was given for the keys {sorted(padding_idx)} but keys_to_pad is {sorted(keys)}")
    if not keys <= set(batch[0]):
        raise ConfigError(f"keys_to_pad {sorted(keys)} are not all in the batch's keys {sorted(batch[0])}")
    out = {k: torch.tensor([x[k] for x in batch]) for k in batch[0] if k not in keys}
    pad = pad_sequence if pad_direction == "right" else left_pad_sequence
    for k in keys_to_pad:
        value = padding_idx[k] if isinstance(padding_idx, Mapping) else padding_idx
        out[k] = pad([torch.as_tensor(x[k]) for x in batch], batch_first=True, padding_value=value)
    return out


def padded_collate_sft(
    batch: Sequence[Mapping[str, Any]], padding_idx: int = 0, ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX
) -> dict[str, torch.Tensor]:
    """``[{"tokens", "labels"}]`` -> ``{"tokens", "labels"}`` LongTensors ``[b, longest]``, right-padded.

    Tokens are padded with ``padding_idx``, labels with ``ignore_idx`` (no loss on padding). A
    causal model needs no mask for right padding: real tokens never look ahead at it.
    """
    rows = [{"tokens": x["tokens"], "labels": x["labels"]} for x in batch]
    out = padded_collate(
        rows,
        pad_direction="right",
        keys_to_pad=["tokens", "labels"],
        padding_idx={"tokens": padding_idx, "labels": ignore_idx},
    )
    tokens, labels = out["tokens"], out["labels"]
    width = max(tokens.shape[-1], labels.shape[-1])  # samples whose labels are longer than their tokens
    tokens = torch.nn.functional.pad(tokens, (0, width - tokens.shape[-1]), value=padding_idx)
    labels = torch.nn.functional.pad(labels, (0, width - labels.shape[-1]), value=ignore_idx)
    return {"tokens": tokens.long(), "labels": labels.long()}


def padded_collate_dpo(
    batch: Sequence[Mapping[str, Any]], padding_idx: int = 0, ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preference pairs ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}``
    -> ``(input_ids, labels)`` ``[2b, longest]``: the chosen sequences, then the rejected ones."""
    rows = [
        {"tokens": x[f"{kind}_input_ids"], "labels": x[f"{kind}_labels"]}
        for kind in ("chosen", "rejected")
        for x in batch
    ]
    out = padded_collate_sft(rows, padding_idx=padding_idx, ignore_idx=ignore_idx)
    return out["tokens"], out["labels"]


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


padded_collate_tiled_images_and_mask = unsupported(
    "tuner.data.padded_collate_tiled_images_and_mask", "tuner fine-tunes text-only models", "use padded_collate_sft"
)
