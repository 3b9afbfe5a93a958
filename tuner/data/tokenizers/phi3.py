"""Phi-3-mini tokenizer: tokenizer.json (Llama-style SentencePiece BPE plus chat tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import iter_required, load_backend
from tuner.data.tokenizers._base import FamilyTokenizer, Piece


class Phi3Format:
    """Phi-3-mini-4k-instruct's HF template: ``<|role|>\\ncontent<|end|>\\n`` per turn, no BOS.

    After the last turn comes ``<|assistant|>\\n`` with a generation prompt and ``<|endoftext|>``
    (EOS) without one. Contents are not stripped.
    """

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        pieces: list[Piece] = []
        for m in messages:
            text = f"<|{m.role}|>\n{m.text_content}"
            pieces.append((text + ("<|end|>\n" if m.eot else ""), m.masked))
        if add_generation_prompt:
            pieces.append(("<|assistant|>\n", True))
        elif messages[-1].eot:
            pieces.append(("<|endoftext|>", messages[-1].masked))
        return pieces


def phi3_mini_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = None
) -> FamilyTokenizer:
    """Phi-3-mini tokenizer from tokenizer.json or its folder.

    BOS ``<s>`` (only for ``encode``; the chat template adds none), EOS ``<|endoftext|>``, pad
    ``<|endoftext|>``; generation also stops at ``<|end|>`` and ``<|assistant|>`` (the stop ids of
    Phi-3-mini-4k-instruct's generation_config.json: 32000, 32001, 32007). Given the folder's ``tokenizer.model``
    (as torchtune's configs do), whose SentencePiece vocabulary lacks the chat tokens, the
    ``tokenizer.json`` beside it is read: the same vocabulary with those tokens added.
    """
    beside = Path(path).with_name("tokenizer.json")
    if Path(path).suffix == ".model" and beside.is_file():
        path = str(beside)
    backend = load_backend(path)
    names = ["<s>", "<|endoftext|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    ids = iter_required(backend, names, "Phi-3")
    return FamilyTokenizer(
        backend,
        Phi3Format(),
        bos_id=ids["<s>"],
        eos_id=ids["<|endoftext|>"],
        pad_id=ids["<|endoftext|>"],
        stop_tokens=[ids["<|endoftext|>"], ids["<|end|>"], ids["<|assistant|>"]],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name="phi3_mini",
    )
