"""torchtune's ``gemma_tokenizer`` (which its Gemma and Gemma 2 configs use): Gemma's
SentencePiece ``tokenizer.model`` with no chat format, each turn's raw text between BOS and EOS.

For Gemma 2's HF chat template (``<start_of_turn>user ...``), use `gemma2_tokenizer`.
"""

from __future__ import annotations

from typing import Optional

from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._base import FamilyTokenizer, sentencepiece_tokenizer


def gemma_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = None
) -> FamilyTokenizer:
    """Gemma tokenizer from its SentencePiece ``tokenizer.model`` (BOS ``<bos>``, EOS ``<eos>``),
    tokenizing messages torchtune's raw way; ``prompt_template`` is applied to the texts."""
    return sentencepiece_tokenizer(path, None, max_seq_len=max_seq_len, prompt_template=prompt_template, name="gemma")
