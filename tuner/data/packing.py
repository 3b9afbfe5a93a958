"""Packing: many samples in one fixed-length sequence, with per-document positions and masks.

A pack is ``{"tokens", "labels", "input_pos", "seq_lens"}`` of length ``max_seq_len``: documents
one after another, then padding (tokens ``padding_idx``, labels -100), which counts as one more
document. ``input_pos`` restarts at 0 for every document, and the attention mask lets a token see
only earlier tokens of its own document, so each document is computed exactly as if it were alone.
A sample split across packs (``split_across_pack``) keeps its positions: its continuation in the
next pack starts at the position where the first part stopped, as in torchtune. Padding positions
continue after the last document's, capped at ``max_seq_len - 1`` (they are never scored).

Labels at document boundaries. Labels are aligned with tokens and the loss shifts them by one
(logits at position i are scored against labels[i + 1]). Unpacked, a sample's first label is
never scored. Packed, the first label of a document would be scored against the logits of the
previous document's last token, training "end of document A -> start of document B". So the
first label of every document in a pack is set to -100: each document then contributes exactly
the per-token losses it contributes unpacked (tested in tests/data/test_packing.py).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch.nn.attention.flex_attention import create_block_mask
from torch.utils.data import Dataset

from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.errors import DataError


class PackedDataset(Dataset):
    """Pack the samples of ``ds`` (``{"tokens", "labels"}``) into sequences of ``max_seq_len``.

    Samples are taken in order and packed greedily; a sample that does not fit in what is left of
    the current pack starts the next one. With ``split_across_pack=True`` a sample fills the rest
    of the pack and continues in the next (for text completion); otherwise a sample longer than
    ``max_seq_len`` is an error. ``max_packs`` stops after that many packs. Packing happens once,
    when the dataset is built.
    """

    def __init__(
        self,
        ds: Any,
        max_seq_len: int,
        padding_idx: int = 0,
        max_packs: Optional[int] = None,
        split_across_pack: bool = False,
    ) -> None:
        if not isinstance(max_seq_len, int) or max_seq_len <= 0:
            raise DataError(f"packing needs a positive max_seq_len, got {max_seq_len!r}", "set tokenizer.max_seq_len")
        self.ds = ds
        self.max_seq_len = max_seq_len
        self.padding_idx = padding_idx
        self.max_packs = max_packs
        self.split_across_pack = split_across_pack
        self.packs: list[dict[str, torch.Tensor]] = []
        self._pack()

    def _pack(self) -> None:
        tokens: list[int] = []
        labels: list[int] = []
        seq_lens: list[int] = []
        starts: list[int] = []  # first position of each document in the pack
        for idx in range(len(self.ds)):
            sample = self.ds[idx]
            t, lab = list(sample["tokens"]), list(sample["labels"])
            if len(t) != len(lab):
                raise DataError(
                    f"sample {idx}: {len(t)} tokens but {len(lab)} labels", "labels must be aligned with tokens"
                )
            if not t:
                continue
            if len(t) > self.max_seq_len and not self.split_across_pack:
                raise DataError(
                    f"Dataset sample is too long: sample {idx} has {len(t)} tokens, more than the packed max_seq_len "
                    f"{self.max_seq_len}",
                    "set tokenizer.max_seq_len to at most the pack length (samples are truncated), or "
                    "split_across_pack=True",
                )
            first_pos = 0  # position of t[0] within its sample (non-zero for a split sample's continuation)
            while t:
                room = self.max_seq_len - len(tokens)
                if len(t) > room and not self.split_across_pack:
                    self._flush(tokens, labels, seq_lens, starts)
                    tokens, labels, seq_lens, starts = [], [], [], []
                    room = self.max_seq_len
                take = min(room, len(t))
                tokens += t[:take]
                labels += lab[:take]
                seq_lens.append(take)
                starts.append(first_pos)
                t, lab, first_pos = t[take:], lab[take:], first_pos + take
                if len(tokens) == self.max_seq_len:
                    self._flush(tokens, labels, seq_lens, starts)
                    tokens, labels, seq_lens, starts = [], [], [], []
                if self.max_packs is not None and len(self.packs) >= self.max_packs:
                    return
        if tokens:
            self._flush(tokens, labels, seq_lens, starts)
        if not self.packs:
            raise DataError("nothing to pack: the dataset is empty", "check the data source and filter_fn")

    def _flush(self, tokens: list[int], labels: list[int], seq_lens: list[int], starts: list[int]) -> None:
        if not tokens or (self.max_packs is not None and len(self.packs) >= self.max_packs):
            return
        labels = list(labels)
        input_pos: list[int] = []
        offset = 0
        for n, first in zip(seq_lens, starts):
            labels[offset] = CROSS_ENTROPY_IGNORE_IDX  # see the module docstring
            input_pos += range(first, first + n)
            offset += n
        pad = self.max_seq_len - len(tokens)
        lens = list(seq_lens)
        if pad:
            tokens = tokens + [self.padding_idx] * pad
            labels = labels + [CROSS_ENTROPY_IGNORE_IDX] * pad
            input_pos += [min(p, self.max_seq_len - 1) for p in range(input_pos[-1] + 1, input_pos[-1] + 1 + pad)]
            lens.append(pad)
        self.packs.append(
            {
                "tokens": torch.tensor(tokens, dtype=torch.long),
                "labels": torch.tensor(labels, dtype=torch.long),
                "input_pos": torch.tensor(input_pos, dtype=torch.long),
                "seq_lens": torch.tensor(lens, dtype=torch.long),
            }
        )

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return self.packs[idx]


def document_ids(seq_lens: Sequence[torch.Tensor | Sequence[int]]) -> torch.Tensor:
    """Per-position document index ``[b, s]`` from each pack's document lengths."""
    rows = []
    for lens in seq_lens:
        lens = torch.as_tensor(lens, dtype=torch.long)
        rows.append(torch.repeat_interleave(torch.arange(len(lens)), lens))
    return torch.stack(rows)


def packed_block_causal_mask(seq_lens: Sequence[torch.Tensor | Sequence[int]]) -> torch.Tensor:
    """Bool mask ``[b, s, s]`` (True = may attend): causal within each document, nothing across."""
    doc = document_ids(seq_lens)
    s = doc.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    return (doc[:, :, None] == doc[:, None, :]) & causal[None]


def packed_flex_block_mask(document_ids: torch.Tensor, device: Optional[torch.device | str] = None):
    """FlexAttention ``BlockMask`` with the same pattern as `packed_block_causal_mask`.

    ``document_ids``: ``[b, s]`` from `document_ids`. Built on ``device`` (CUDA for the fast path;
    defaults to the tensor's device).
    """
    device = torch.device(device) if device is not None else document_ids.device
    doc = document_ids.to(device)
    b, s = doc.shape

    def mask_mod(bi, h, q_idx, kv_idx):
        return (doc[bi, q_idx] == doc[bi, kv_idx]) & (q_idx >= kv_idx)

    return create_block_mask(mask_mod, B=b, H=None, Q_LEN=s, KV_LEN=s, device=device)
