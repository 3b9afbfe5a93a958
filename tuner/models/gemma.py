"""torchtune's ``gemma`` module, for the one name its Gemma 2 configs use from it: ``gemma_tokenizer``
(Gemma 1 and Gemma 2 share the tokenizer). The Gemma 1 models themselves are not in tuner."""
from __future__ import annotations

from tuner.data.tokenizers import gemma2_tokenizer as gemma_tokenizer

__all__ = ["gemma_tokenizer"]
