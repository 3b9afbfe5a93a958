"""SmolLM2 tokenizer: byte-level BPE (tokenizer.json) with ChatML."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import HFBackend
from tuner.data.tokenizers._base import FamilyTokenizer
from tuner.data.tokenizers._chatml import ChatMLFormat, chatml_tokenizer

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def smollm2_tokenizer(
    path: str,
    max_seq_len: Optional[int] = None,
    prompt_template: PromptTemplateLike = None,
    default_system: Optional[str] = SMOLLM2_DEFAULT_SYSTEM,
) -> FamilyTokenizer:
    """SmolLM2 (Instruct) tokenizer from tokenizer.json or its folder.

    Chat format: SmolLM2-Instruct's ChatML template, which inserts its default system prompt when
    the conversation has none. EOS and padding are ``<|im_end|>``; stops also at
    ``<|endoftext|>``; no BOS (the HF tokenizer adds none).
    """
    return chatml_tokenizer(
        HFBackend(Path(path)),
        ChatMLFormat(default_system),
        pad_token="<|im_end|>",
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name="smollm2",
        title="SmolLM2",
    )
