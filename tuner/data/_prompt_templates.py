"""torchtune's module path ``torchtune.data._prompt_templates``; the names live in
`tuner.data.prompt_templates` (``_get_prompt_template`` is its `resolve_prompt_template`)."""

from tuner.data.prompt_templates import (  # noqa: F401
    ChatMLTemplate,
    GrammarErrorCorrectionTemplate,
    PromptTemplate,
    PromptTemplateInterface,
    QuestionAnswerTemplate,
    SummarizeTemplate,
)
from tuner.data.prompt_templates import resolve_prompt_template as _get_prompt_template  # noqa: F401
