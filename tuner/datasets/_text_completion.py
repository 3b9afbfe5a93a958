"""Plain-text datasets for continued pre-training."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from tuner.datasets._packing import maybe_pack
from tuner.datasets._sft import TextCompletionDataset


def text_completion_dataset(
    tokenizer: Any,
    source: str,
    column: str = "text",
    data_files: Any = None,
    add_eos: bool = True,
    packed: bool = False,
    split_across_pack: bool = True,
    split: str = "train",
    filter_fn: Optional[Callable[[Mapping[str, Any]], bool]] = None,
    **load_dataset_kwargs: Any,
):
    """Each row's ``column`` tokenized with BOS (and EOS), all tokens trained on.

    ``source="text"`` with ``data_files`` reads plain text files, one row per line.
    ``packed=True`` packs into sequences of ``tokenizer.max_seq_len``, splitting long documents
    across packs unless ``split_across_pack=False``.
    """
    ds = TextCompletionDataset(
        tokenizer, source=source, column=column, add_eos=add_eos, filter_fn=filter_fn, split=split,
        data_files=data_files, **load_dataset_kwargs,
    )
    return maybe_pack(ds, tokenizer, packed, split_across_pack=split_across_pack)
