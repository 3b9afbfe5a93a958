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
    """Mistral-Instruct's chat format as Mistral's own reference encodes it (``mistral_common``'s
    ``encode_chat_completion``, which vLLM uses), for both kinds of Mistral vocabulary.

    ``instruct_tokens=False`` (v1 vocabulary, Mistral 7B v0.1, where ``[INST]`` is plain text):
    ``<s>[INST] user [/INST] answer</s>``; the answer starts with its own space piece (mistral_common
    encodes it on its own), and a system prompt goes in front of the first user turn.
    ``instruct_tokens=True`` (v2/v3 vocabulary, Mistral 7B v0.3, where ``[INST]`` / ``[/INST]`` are
    control tokens): ``<s>[INST]user[/INST]answer</s>``, each text after a control token encoded
    with its leading space piece, answers without trailing spaces, a system prompt in front of the
    last user turn. A system prompt is followed by a blank line; contents are not stripped.

    HF's chat template of Mistral-7B-Instruct-v0.1/v0.2 writes ``[/INST]answer`` in one string,
    which loses the answer's leading space piece: tuner follows Mistral's reference (docs/internals.md).
    """

    def __init__(self, instruct_tokens: bool = False) -> None:
        self.instruct_tokens = instruct_tokens

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        system, msgs = split_system(messages)
        users = [i for i, m in enumerate(msgs) if m.role == "user"]
        system_turn = (users[-1] if self.instruct_tokens else users[0]) if users else None
        pieces: list[Piece] = [("<s>", True)]
        for i, m in enumerate(msgs):
            content = m.text_content
            if m.role == "user":
                if system is not None and i == system_turn:
                    content = f"{system}\n\n{content}"
                text = f"[INST]{content}[/INST]" if self.instruct_tokens else f"[INST] {content} [/INST]"
                pieces.append((text, m.masked))
            elif m.role == "assistant":
                answer = content.rstrip(" ") if self.instruct_tokens else " " + content
                pieces.append((answer + ("</s>" if m.eot else ""), m.masked))
        return pieces


class MistralChatTemplate(PromptTemplateInterface):
    """torchtune's Mistral chat template as text: ``[INST] user [/INST] `` (no system prompt).

    Given to `mistral_tokenizer` (its default) it selects `MistralFormat`, Mistral's own format
    (mistral_common's); applied on its own it wraps user texts as torchtune's template does.
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

    ``prompt_template``: `MistralChatTemplate` (default) gives the Mistral-Instruct format of the
    file's vocabulary (`MistralFormat`: v1, or v2/v3 with ``[INST]`` control tokens); None
    gives the raw texts, each turn between BOS and EOS (torchtune's ``prompt_template: null``); any
    other template is applied to the texts, which are then tokenized that raw way.
    """
    chat_format, template = select_chat_format(prompt_template, MistralChatTemplate, MistralFormat())
    tok = sentencepiece_tokenizer(path, chat_format, max_seq_len=max_seq_len, prompt_template=template, name="mistral")
    if chat_format is not None:  # v2/v3 vocabularies spell [INST] / [/INST] as control tokens
        tok.chat_format = MistralFormat(instruct_tokens="[INST]" in tok.backend.special_tokens)
    return tok
