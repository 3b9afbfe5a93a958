"""Small data helpers with torchtune's names: `truncate`; the image helpers are not supported."""

from __future__ import annotations

from typing import Any, Optional

from tuner.errors import unsupported


def truncate(tokens: list[Any], max_seq_len: int, eos_id: Optional[Any] = None) -> list[Any]:
    """The first ``max_seq_len`` items of ``tokens``; with ``eos_id``, the last one made ``eos_id``
    (so a truncated sequence still ends with EOS). Works on masks too (``eos_id`` = the mask value)."""
    out = list(tokens[:max_seq_len])
    if eos_id is not None and out and out[-1] != eos_id:
        out[-1] = eos_id
    return out


_TEXT_ONLY = "tuner fine-tunes text-only models"
_DROP_IMAGES = "drop the image columns from the dataset"
load_image = unsupported("tuner.data.load_image", _TEXT_ONLY, _DROP_IMAGES)
format_content_with_images = unsupported("tuner.data.format_content_with_images", _TEXT_ONLY, _DROP_IMAGES)
