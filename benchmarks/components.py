"""Config components for benchmarks: random tokens, no tokenizer files, random weights."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class NullTokenizer:
    """Stands in for a tokenizer where the data is already token ids."""

    def __init__(self, pad_id: int = 0, max_seq_len: int | None = None) -> None:
        self.pad_id = pad_id
        self.eos_id = pad_id
        self.bos_id = None
        self.stop_tokens = [pad_id]
        self.max_seq_len = max_seq_len


class _Synthetic(Dataset):
    def __init__(self, seq_len: int, num_samples: int, vocab_size: int, seed: int, min_len: int | None) -> None:
        self.seq_len, self.num_samples, self.vocab_size, self.seed = seq_len, num_samples, vocab_size, seed
        self.min_len = min_len

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        g = _generator(self.seed, i)
        tokens = torch.randint(0, self.vocab_size, (_length(self.seq_len, self.min_len, g),), generator=g).tolist()
        return {"tokens": tokens, "labels": list(tokens)}


def _generator(seed: int, i: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + i)


def _length(seq_len: int, min_len: int | None, g: torch.Generator) -> int:
    return seq_len if min_len is None else int(torch.randint(min_len, seq_len + 1, (), generator=g))


def synthetic_document_length(seq_len: int, min_len: int | None, i: int, seed: int = 0) -> int:
    """The length of sample ``i`` of ``synthetic_dataset(seq_len=..., min_len=..., seed=...)``, without
    drawing its tokens (``--compare-torchtune --packed`` gives torchtune documents of these lengths)."""
    return _length(seq_len, min_len, _generator(seed, i))


def synthetic_dataset(
    tokenizer: Any,
    seq_len: int = 2048,
    num_samples: int = 1000,
    vocab_size: int = 32000,
    seed: int = 0,
    packed: bool = False,
    min_len: int | None = None,
) -> Dataset:
    """``num_samples`` random token sequences, every token trained on.

    Each is exactly ``seq_len`` long, or (with ``min_len``) of a random length in
    [min_len, seq_len], like real documents; ``packed=True`` then packs them into ``seq_len``
    sequences with per-document positions and masks, as the dataset builders do. Their loss stays at
    ln(vocab) (speed only); data a model can learn, for quality comparisons, is
    `benchmarks.parity.learnable_tokens` (``scripts/benchmark.py --learnable-data``).
    """
    data = _Synthetic(seq_len, num_samples, vocab_size, seed, min_len)
    if not packed:
        return data
    from tuner.data.packing import PackedDataset

    return PackedDataset(data, max_seq_len=seq_len, padding_idx=getattr(tokenizer, "pad_id", 0))


class RandomInitCheckpointer:
    """A checkpointer with no files: the model keeps its random initialisation; nothing is saved."""

    def __init__(
        self,
        output_dir: str | None = None,
        model_type: str | None = None,
        resume_from_checkpoint: bool = False,
        **_: Any,
    ) -> None:
        self.output_dir = output_dir

    def load_checkpoint(self, on_shard: Any = None, weights: bool = True) -> dict:
        return {}

    def save_checkpoint(self, state: dict, step: int, epoch: int, adapter_only: bool = False) -> None:
        pass
