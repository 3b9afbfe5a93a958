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
    def __init__(
        self, seq_len: int, num_samples: int, vocab_size: int, seed: int, min_len: int | None, learnable: int = 0
    ) -> None:
        self.seq_len, self.num_samples, self.vocab_size, self.seed = seq_len, num_samples, vocab_size, seed
        self.min_len, self.learnable = min_len, learnable
        if learnable:  # a fixed random map over `learnable` token ids: the structure to learn
            g = torch.Generator().manual_seed(seed)
            self.symbols = torch.randperm(vocab_size, generator=g)[:learnable]
            self.next = torch.randperm(learnable, generator=g)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        g = _generator(self.seed, i)
        n = _length(self.seq_len, self.min_len, g)
        if not self.learnable:
            tokens = torch.randint(0, self.vocab_size, (n,), generator=g).tolist()
            return {"tokens": tokens, "labels": list(tokens)}
        # a Markov chain: the next symbol is next[current] with probability 0.9, else any of them
        jumps = torch.randint(0, self.learnable, (n,), generator=g)
        follow = torch.rand(n, generator=g) < LEARNABLE_FOLLOW
        state = [int(jumps[0])]
        for t in range(1, n):
            state.append(int(self.next[state[-1]]) if follow[t] else int(jumps[t]))
        tokens = self.symbols[torch.tensor(state)].tolist()
        return {"tokens": tokens, "labels": list(tokens)}


LEARNABLE_FOLLOW = 0.9  # how often `learnable` data takes its map's next symbol


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
    learnable: int = 0,
) -> Dataset:
    """``num_samples`` random token sequences, every token trained on.

    Each is exactly ``seq_len`` long, or (with ``min_len``) of a random length in
    [min_len, seq_len], like real documents; ``packed=True`` then packs them into ``seq_len``
    sequences with per-document positions and masks, as the dataset builders do. ``learnable=n``
    gives data with structure (quality comparisons): a Markov chain over ``n`` token ids that moves
    to a fixed successor of the current id 90% of the time, so the loss can fall from ln(vocab) to
    about 0.1 ln(n) + 0.33 nats; every sample is new, so a step's loss is on unseen data.
    """
    data = _Synthetic(seq_len, num_samples, vocab_size, seed, min_len, learnable)
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
