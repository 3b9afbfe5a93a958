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
    def __init__(self, seq_len: int, num_samples: int, vocab_size: int, seed: int) -> None:
        self.seq_len, self.num_samples, self.vocab_size, self.seed = seq_len, num_samples, vocab_size, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        tokens = torch.randint(0, self.vocab_size, (self.seq_len,), generator=g).tolist()
        return {"tokens": tokens, "labels": list(tokens)}


def synthetic_dataset(tokenizer: Any, seq_len: int = 2048, num_samples: int = 1000, vocab_size: int = 32000, seed: int = 0, packed: bool = False) -> Dataset:
    """``num_samples`` sequences of exactly ``seq_len`` random token ids, every token trained on.

    ``packed`` is accepted for config compatibility: the sequences are already full length.
    """
    return _Synthetic(seq_len, num_samples, vocab_size, seed)


class RandomInitCheckpointer:
    """A checkpointer with no files: the model keeps its random initialisation; nothing is saved."""

    def __init__(self, output_dir: str | None = None, model_type: str | None = None, resume_from_checkpoint: bool = False, **_: Any) -> None:
        self.output_dir = output_dir

    def load_checkpoint(self, on_shard: Any = None) -> dict:
        return {}

    def save_checkpoint(self, state: dict, step: int, epoch: int, adapter_only: bool = False) -> None:
        pass
