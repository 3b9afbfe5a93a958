"""Mistral tokenizer: SentencePiece ``tokenizer.model`` with the [INST] chat format."""

from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateInterface, PromptTemplateLike, wrap
from tuner.data.tokenizers._base import (
    FamilyTokenizer,
    Piece,
    select_chat_format,
    sentencepiece_tokenizer,
    split_system,
)
from tuner.errors import DataError


class MistralFormat:
    """Mistral-Instruct's HF template (v0.1/v0.2, Mixtral): ``<s>[INST] user [/INST]answer</s>``.

    Contents are not stripped. The HF template rejects a system turn; here it is put in front of
    the first user turn, separated by a blank line (as Mistral's later templates do).
    """

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        system, msgs = split_system(messages)
        pieces: list[Piece] = [("<s>", True)]
        for i, m in enumerate(msgs):
            content = m.text_content
            if m.role == "user":
                if system is not None and not any(p.role == "user" for p in msgs[:i]):
                    content = f"{system}\n\n{content}"
                pieces.append((f"[INST] {content} [/INST]", m.masked))
            elif m.role == "assistant":
                pieces.append((content + ("</s>" if m.eot else ""), m.masked))
        return pieces


class MistralChatTemplate(PromptTemplateInterface):
    """torchtune's Mistral chat template as text: ``[INST] user [/INST] `` (no system prompt).

    Given to `mistral_tokenizer` (its default) it selects `MistralFormat`, the exact HF chat
    format; applied on its own it wraps user texts as torchtune's template does.
    """

    template = {"system": None, "user": ("[INST] ", " [/INST] "), "assistant": ("", ""), "ipython": ("", "")}

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> list[Message]:
        out = []
        for m in messages:
            if m.role == "system":
                raise DataError("System prompts are not supported in MistralChatTemplate", "drop the system message")
            out.append(wrap(m, *self.template.get(m.role, ("", ""))))
        return out


def mistral_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = MistralChatTemplate
) -> FamilyTokenizer:
    """Mistral tokenizer from its SentencePiece ``tokenizer.model`` (BOS ``<s>``, EOS ``</s>``, pad 0).

    ``prompt_template``: `MistralChatTemplate` (default) gives the Mistral-Instruct format; None
    gives the raw texts, each turn between BOS and EOS (torchtune's ``prompt_template: null``); any
    other template is applied to the texts, which are then tokenized that raw way.
    """
    chat_format, template = select_chat_format(prompt_template, MistralChatTemplate, MistralFormat())
    return sentencepiece_tokenizer(path, chat_format, max_seq_len=max_seq_len, prompt_template=template, name="mistral")
