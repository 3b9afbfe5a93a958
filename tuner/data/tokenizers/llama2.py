"""Llama 2 tokenizer: SentencePiece ``tokenizer.model`` with the [INST] <<SYS>> chat format."""
from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._base import ModelTokenizer, Piece, sentencepiece_tokenizer


class Llama2Format:
    """Llama-2-chat's HF template: ``<s>[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nuser [/INST] answer </s>``.

    The system prompt goes inside the first user turn; contents are stripped; every user turn
    opens with BOS and every answer closes with EOS. There is no separate generation prompt: a
    conversation ending in a user turn already ends with ``[/INST]``.
    """

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        msgs = list(messages)
        system = msgs.pop(0).content if msgs and msgs[0].role == "system" else None
        pieces: list[Piece] = []
        for i, m in enumerate(msgs):
            content = m.content
            if i == 0 and system is not None:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
            if m.role == "user":
                pieces.append((f"<s>[INST] {content.strip()} [/INST]", m.masked))
            elif m.role == "assistant":
                pieces.append((f" {content.strip()}" + (" </s>" if m.eot else ""), m.masked))
        return pieces


def llama2_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = None
) -> ModelTokenizer:
    """Llama 2 tokenizer from its SentencePiece ``tokenizer.model`` (BOS ``<s>``, EOS ``</s>``, pad 0)."""
    return sentencepiece_tokenizer(
        path, Llama2Format(), max_seq_len=max_seq_len, prompt_template=prompt_template, name="llama2"
    )
