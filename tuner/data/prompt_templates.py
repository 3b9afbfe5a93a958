"""Prompt templates: text wrapped around message contents before tokenization.

A prompt template adds task text around contents, e.g. "Summarize this dialogue:\\n{content}\\n---\\n".
A tokenizer built with ``prompt_template=`` applies it in ``tokenize_messages``. The added text goes
in as separate text parts of the message (torchtune's layout), so a tokenizer that encodes part by
part sees the template text and the content apart, as torchtune's do.

The chat templates of families whose format is plain text (Llama 2's ``Llama2ChatTemplate``,
Mistral's ``MistralChatTemplate``) live with their tokenizers in ``tuner.data.tokenizers``; given to
their own family's tokenizer they select its exact chat format (see ``llama2_tokenizer``).
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping, Optional, Protocol, Sequence, Union

from tuner.config._aliases import canonical_path
from tuner.data.messages import Message
from tuner.errors import ConfigError


class PromptTemplateInterface(Protocol):
    """A callable that takes messages and returns them with template text added (torchtune's)."""

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> list[Message]: ...


def wrap(message: Message, prepend: str, append: str) -> Message:
    """``message`` with ``prepend`` and ``append`` as text parts around its content."""
    parts = ([{"type": "text", "content": prepend}] if prepend else []) + message.content
    parts += [{"type": "text", "content": append}] if append else []
    return message.replace(content=parts)


class PromptTemplate(PromptTemplateInterface):
    """Wrap each message of a role in ``(prepend, append)`` text.

    ``template``: role -> (prepend, append), e.g. ``{"user": ("Question: ", "\\n\\nAnswer: ")}``.
    Roles not in the template are left as they are.
    """

    def __init__(self, template: Mapping[str, Sequence[str]]) -> None:
        for role, pair in template.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
                raise ConfigError(
                    f"prompt template entry for role {role!r} must be a pair of strings (prepend, append)",
                    'write e.g. {"user": ["Question: ", "\\n\\nAnswer: "]}',
                )
        self.template = {role: (pair[0], pair[1]) for role, pair in template.items()}

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> list[Message]:
        return [wrap(m, *self.template[m.role]) if m.role in self.template else m for m in messages]


class ChatMLTemplate(PromptTemplateInterface):
    """OpenAI's ChatML as text: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message; a final empty
    assistant message becomes the generation prompt ``<|im_start|>assistant\\n``."""

    template = {
        "system": ("<|im_start|>system\n", "<|im_end|>\n"),
        "user": ("<|im_start|>user\n", "<|im_end|>\n"),
        "assistant": ("<|im_start|>assistant\n", "<|im_end|>\n"),
        "ipython": ("", ""),
        "tool": ("<|im_start|>tool\n", "<|im_end|>\n"),
    }

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> list[Message]:
        out = []
        for i, m in enumerate(messages):
            prepend, append = self.template[m.role]
            if m.role == "assistant" and i == len(messages) - 1 and not m.text_content:
                append = ""
            out.append(wrap(m, prepend, append))
        return out


# torchtune's built-in task templates.
class GrammarErrorCorrectionTemplate(PromptTemplate):
    def __init__(self) -> None:
        super().__init__({"user": ("Correct this to standard English: ", "\n---\nCorrected: ")})


class SummarizeTemplate(PromptTemplate):
    def __init__(self) -> None:
        super().__init__({"user": ("Summarize this dialogue:\n", "\n---\nSummary:\n")})


class QuestionAnswerTemplate(PromptTemplate):
    def __init__(self) -> None:
        super().__init__({"user": ("Question: ", "\n\nAnswer: ")})


PromptTemplateLike = Union[None, str, Mapping[str, Sequence[str]], type, Callable[[Sequence[Message]], list]]


def resolve_prompt_template(spec: PromptTemplateLike) -> Optional[Callable[[Sequence[Message]], list]]:
    """None, a template (instance or class), a role -> (prepend, append) mapping, or a dotted path to
    a template class or factory (torchtune's paths and the ``torchtune.`` prefix resolve too)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        module, _, name = canonical_path(spec).rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), name) if module else globals()[name]
        except (ImportError, AttributeError, KeyError, ValueError):
            raise ConfigError(
                f"prompt template {spec!r} not found",
                "give a dotted path such as tuner.data.QuestionAnswerTemplate, or a role -> [prepend, append] mapping",
            ) from None
        return obj() if isinstance(obj, type) else obj
    if isinstance(spec, type):
        return spec()
    if isinstance(spec, Mapping):
        return PromptTemplate(spec)
    if callable(spec):
        return spec
    raise ConfigError(
        f"Prompt template must be a dotpath string or dictionary with custom template, got {type(spec).__name__}",
        "give a dotted path such as tuner.data.QuestionAnswerTemplate, or a role -> [prepend, append] mapping",
    )
