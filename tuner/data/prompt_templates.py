"""Prompt templates: text wrapped around message contents before tokenization.

A prompt template is not the chat format (the special tokens of a model family, which the
tokenizer adds); it adds task text around contents, e.g. "Summarize this dialogue:\n{content}\n---\n".
A tokenizer built with ``prompt_template=`` applies it in ``tokenize_messages``.
"""
from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Callable, Mapping, Optional, Sequence, Union

from tuner.errors import ConfigError
from tuner.data.messages import Message


class PromptTemplate:
    """Wrap each message of a role in ``(prepend, append)`` text.

    ``template``: role -> (prepend, append), e.g. ``{"user": ("Question: ", "\n\nAnswer: ")}``.
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

    def __call__(self, messages: Sequence[Message]) -> list[Message]:
        out = []
        for m in messages:
            if m.role in self.template:
                pre, post = self.template[m.role]
                m = replace(m, content=pre + m.content + post)
            out.append(m)
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


PromptTemplateLike = Union[None, str, Mapping[str, Sequence[str]], Callable[[Sequence[Message]], list]]


def resolve_prompt_template(spec: PromptTemplateLike) -> Optional[Callable[[Sequence[Message]], list]]:
    """None, a callable, a role -> (prepend, append) mapping, or a dotted path to a template class/factory."""
    if spec is None:
        return None
    if isinstance(spec, str):
        module, _, name = spec.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), name) if module else globals()[name]
        except (ImportError, AttributeError, KeyError, ValueError):
            raise ConfigError(
                f"prompt template {spec!r} not found",
                "give a dotted path such as tuner.data.prompt_templates.QuestionAnswerTemplate, or a role -> [prepend, append] mapping",
            ) from None
        return obj() if isinstance(obj, type) else obj
    if isinstance(spec, Mapping):
        return PromptTemplate(spec)
    if callable(spec):
        return spec
    raise ConfigError(f"prompt_template must be a mapping, a dotted path or a callable, got {type(spec).__name__}")
