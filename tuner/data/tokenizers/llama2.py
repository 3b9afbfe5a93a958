"""Llama 2 tokenizer: SentencePiece ``tokenizer.model`` with the [INST] <<SYS>> chat format."""

from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateInterface, PromptTemplateLike, wrap
from tuner.data.tokenizers._base import FamilyTokenizer, Piece, select_chat_format, sentencepiece_tokenizer


class Llama2Format:
    """Llama-2-chat's HF template: ``<s>[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nuser [/INST] answer </s>``.

    The system prompt goes inside the first user turn; contents are stripped; every user turn
    opens with BOS and every answer closes with EOS. There is no separate generation prompt: a
    conversation ending in a user turn already ends with ``[/INST]``.
    """

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        msgs = list(messages)
        system = msgs.pop(0).text_content if msgs and msgs[0].role == "system" else None
        pieces: list[Piece] = []
        for i, m in enumerate(msgs):
            content = m.text_content
            if i == 0 and system is not None:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
            if m.role == "user":
                pieces.append((f"<s>[INST] {content.strip()} [/INST]", m.masked))
            elif m.role == "assistant":
                pieces.append((f" {content.strip()}" + (" </s>" if m.eot else ""), m.masked))
        return pieces


class Llama2ChatTemplate(PromptTemplateInterface):
    """torchtune's Llama 2 chat template as text: ``[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nuser [/INST] ``.

    Given to `llama2_tokenizer` (its default) it selects `Llama2Format`, the exact HF/Meta chat
    format; applied on its own (or with another tokenizer) it wraps the message texts as torchtune's
    template does: the system prompt goes into the next user message.
    """

    template = {
        "system": ("<<SYS>>\n", "\n<</SYS>>\n\n"),
        "user": ("[INST] ", " [/INST] "),
        "assistant": ("", ""),
        "ipython": ("", ""),
    }

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> list[Message]:
        system: list[dict] = []
        out = []
        for m in messages:
            if m.role == "system":
                system = wrap(m, *self.template["system"]).content
                continue
            if m.role == "user":
                m = wrap(m.replace(content=system + m.content), *self.template["user"])
            out.append(m)
        return out


def llama2_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = Llama2ChatTemplate
) -> FamilyTokenizer:
    """Llama 2 tokenizer from its SentencePiece ``tokenizer.model`` (BOS ``<s>``, EOS ``</s>``, pad 0).

    ``prompt_template``: `Llama2ChatTemplate` (default) gives the Llama-2-chat format; None gives
    the raw texts, each turn between BOS and EOS (torchtune's ``prompt_template: null``); any other
    template is applied to the texts, which are then tokenized that raw way.
    """
    chat_format, template = select_chat_format(prompt_template, Llama2ChatTemplate, Llama2Format())
    return sentencepiece_tokenizer(path, chat_format, max_seq_len=max_seq_len, prompt_template=template, name="llama2")
