"""`Transform`: what a dataset's message transform and model transform (the tokenizer) are.

torchtune's protocol (``torchtune.modules.transforms.Transform``): a callable that takes a sample
mapping and returns the updated mapping. Subclassing it is optional; it documents the contract.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol


class Transform(Protocol):
    """A sample -> sample callable (row -> messages, messages -> tokens and mask, ...)."""

    def __call__(self, sample: Mapping[str, Any]) -> Mapping[str, Any]: ...
