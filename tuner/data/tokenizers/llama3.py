"""Llama 3 / 3.1 / 3.2 tokenizer: tiktoken over Meta's ``tokenizer.model`` ranks file."""

from __future__ import annotations

import json
from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import TikTokenBackend
from tuner.data.tokenizers._base import FamilyTokenizer, Piece
from tuner.errors import ConfigError, DataError

# Meta's pre-tokenizer regex for Llama 3 (llama/tokenizer.py pat_str).
LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"  # noqa: E501 (the tokenizer's regular expression, verbatim)
NUM_RESERVED_SPECIAL_TOKENS = 256
CL100K_PATTERN = LLAMA3_PATTERN  # torchtune's name for it: tiktoken's cl100k_base pre-tokenizer


def llama3_special_tokens(num_base_tokens: int) -> dict[str, int]:
    """The 256 special tokens after the base ranks, named as in Llama 3.1/3.2's tokenizer.json."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    reserved = [f"<|reserved_special_token_{3 + i}|>" for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(named))]
    return {tok: num_base_tokens + i for i, tok in enumerate(named + reserved)}


class Llama3Format:
    """Llama 3's chat format.

    ``variant="llama3"``: Meta-Llama-3-Instruct's HF template (each turn
    ``<|start_header_id|>role<|end_header_id|>\\n\\n`` + trimmed content + ``<|eot_id|>``).
    ``variant="llama3_1"``: Llama 3.1/3.2-Instruct's template without tools, which always opens with
    a system turn holding "Cutting Knowledge Date: December 2023\\nToday Date: <date_string>\\n\\n"
    before the (trimmed) system prompt, and renders ``tool``/``ipython`` turns as ``ipython`` with
    the content JSON-quoted (as the template's ``tojson`` does).
    """

    def __init__(self, variant: str = "llama3", date_string: str = "26 Jul 2024") -> None:
        if variant not in ("llama3", "llama3_1"):
            raise ConfigError(f"unknown Llama 3 chat format {variant!r}", "use 'llama3' or 'llama3_1'")
        self.variant = variant
        self.date_string = date_string

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        pieces: list[Piece] = [("<|begin_of_text|>", True)]
        msgs = list(messages)
        if self.variant == "llama3_1":
            system = msgs.pop(0) if msgs and msgs[0].role == "system" else None
            text = (
                "<|start_header_id|>system<|end_header_id|>\n\n"
                f"Cutting Knowledge Date: December 2023\nToday Date: {self.date_string}\n\n"
                + (system.text_content.strip() if system else "")
            )
            if system is None or system.eot:
                text += "<|eot_id|>"
            pieces.append((text, system.masked if system else True))
        for m in msgs:
            if self.variant == "llama3_1" and m.role in ("tool", "ipython"):
                # The template's `content is iterable` holds for strings too, so it writes `content | tojson`.
                text = "<|start_header_id|>ipython<|end_header_id|>\n\n" + json.dumps(
                    m.text_content, ensure_ascii=False
                )
            else:
                text = f"<|start_header_id|>{m.role}<|end_header_id|>\n\n{m.text_content.strip()}"
            pieces.append((text + ("<|eot_id|>" if m.eot else ""), m.masked))
        if add_generation_prompt:
            pieces.append(("<|start_header_id|>assistant<|end_header_id|>\n\n", True))
        return pieces


class Llama3Tokenizer(FamilyTokenizer):
    """The Llama 3.x tokenizer (torchtune's class and constructor; `llama3_tokenizer` builds one).

    ``special_tokens``: name -> id; by default the 256 special tokens follow the file's base ranks
    (ids 128000-128255 for the real file). Those the chat format needs must be present.
    """

    REQUIRED_SPECIAL_TOKENS = (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|python_tag|>",
    )

    def __init__(
        self,
        path: str,
        special_tokens: Optional[dict[str, int]] = None,
        max_seq_len: Optional[int] = None,
        prompt_template: PromptTemplateLike = None,
        chat_format: str = "llama3",
        date_string: str = "26 Jul 2024",
    ) -> None:
        if special_tokens is not None:
            missing = [t for t in self.REQUIRED_SPECIAL_TOKENS if t not in special_tokens]
            if missing:
                raise DataError(
                    f"{missing[0]} missing from special_tokens",
                    f"special_tokens needs {list(self.REQUIRED_SPECIAL_TOKENS)}",
                )
        backend = TikTokenBackend(
            path, name="llama3", pattern=LLAMA3_PATTERN, special_tokens=special_tokens or llama3_special_tokens
        )
        st = backend.special_tokens
        super().__init__(
            backend,
            Llama3Format(chat_format, date_string),
            bos_id=st["<|begin_of_text|>"],
            eos_id=st["<|end_of_text|>"],
            pad_id=st.get("<|finetune_right_pad_id|>", 0),
            stop_tokens=[st["<|end_of_text|>"], st["<|eot_id|>"], st["<|eom_id|>"]],
            max_seq_len=max_seq_len,
            prompt_template=prompt_template,
            name="llama3",
        )

    @property
    def base_vocab_size(self) -> int:
        return self.backend.base_vocab_size


def llama3_tokenizer(
    path: str,
    max_seq_len: Optional[int] = None,
    prompt_template: PromptTemplateLike = None,
    chat_format: str = "llama3",
    date_string: str = "26 Jul 2024",
    special_tokens: Optional[dict[str, int]] = None,
) -> Llama3Tokenizer:
    """Llama 3.x tokenizer from Meta's ``original/tokenizer.model`` (a tiktoken ranks file).

    Special tokens follow the base ranks (ids 128000-128255 for the real file):
    ``<|begin_of_text|>`` (BOS), ``<|end_of_text|>`` (EOS), ``<|start_header_id|>``,
    ``<|end_header_id|>``, ``<|eom_id|>``, ``<|eot_id|>`` (end of turn), ``<|python_tag|>``,
    ``<|finetune_right_pad_id|>`` (padding) and the reserved tokens. ``chat_format``:
    "llama3" (Llama 3 template, as torchtune) or "llama3_1" (Llama 3.1/3.2 template with its
    knowledge-date system header, ``date_string`` as in the template's default).
    """
    return Llama3Tokenizer(
        path,
        special_tokens=special_tokens,
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        chat_format=chat_format,
        date_string=date_string,
    )
