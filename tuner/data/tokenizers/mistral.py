"""Mistral tokenizer: SentencePiece ``tokenizer.model`` with the [INST] chat format."""
from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._base import ModelTokenizer, Piece, sentencepiece_tokenizer


class MistralFormat:
    """Mistral-Instruct's HF template (v0.1/v0.2, Mixtral): ``<s>[INST] user [/INST]answer</s>``.

    Contents are not stripped. The HF template rejects a system turn; here it is put in front of
    the first user turn, separated by a blank line (as Mistral's later templates do).
    """

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        msgs = list(messages)
        system = msgs.pop(0).content if msgs and msgs[0].role == "system" else None
        pieces: list[Piece] = [("<s>", True)]
        for i, m in enumerate(msgs):
            content = m.content
            if m.role == "user":
                if system is not None and not any(p.role == "user" for p in msgs[:i]):
                    content = f"{system}\n\n{content}"
                pieces.append((f"[INST] {content} [/INST]", m.masked))
            elif m.role == "assistant":
                pieces.append((content + ("</s>" if m.eot else ""), m.masked))
        return pieces


def mistral_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = None
) -> ModelTokenizer:
    """Mistral tokenizer from its SentencePiece ``tokenizer.model`` (BOS ``<s>``, EOS ``</s>``, pad 0)."""
    return sentencepiece_tokenizer(
        path, MistralFormat(), max_seq_len=max_seq_len, prompt_template=prompt_template, name="mistral"
    )
