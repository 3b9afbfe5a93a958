"""SmolLM2 tokenizer: byte-level BPE (tokenizer.json) with ChatML."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import HFBackend, iter_required
from tuner.data.tokenizers._base import FamilyTokenizer
from tuner.data.tokenizers._chatml import ChatMLFormat

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
    backend = HFBackend(Path(path))
    ids = iter_required(backend, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "SmolLM2")
    return FamilyTokenizer(
        backend,
        ChatMLFormat(default_system),
        bos_id=None,
        eos_id=ids["<|im_end|>"],
        pad_id=ids["<|im_end|>"],
        stop_tokens=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name="smollm2",
    )
