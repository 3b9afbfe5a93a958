"""An Ollama ``Modelfile`` for an exported GGUF file: its chat template in Ollama's Go template syntax and
its stop tokens.

Why: ``ollama create <name> -f Modelfile`` turns a GGUF file into an Ollama model; without a TEMPLATE
Ollama guesses one from the file's Jinja chat template, and without stop tokens generation can run past
the end of a turn. The templates here render the role / content turns of each chat format exactly as
the family's HF chat template does for conversations without tools and without a system prompt the
template would add by default (tests/generation/test_export_gguf.py renders them against the Jinja
templates). BOS is not in them: llama.cpp adds it from the file's ``add_bos_token``.
"""

from __future__ import annotations

from typing import Any, Iterable

from tuner.data.tokenizers._chatml import ChatMLFormat
from tuner.data.tokenizers.gemma2 import Gemma2Format
from tuner.data.tokenizers.llama2 import Llama2Format
from tuner.data.tokenizers.llama3 import Llama3Format
from tuner.data.tokenizers.mistral import MistralFormat
from tuner.data.tokenizers.phi3 import Phi3Format
from tuner.data.tokenizers.qwen3 import Qwen3Format

_CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

#: chat format -> its turns in Ollama's template language (Go text/template over .Messages)
GO_TEMPLATES: dict[type, str] = {
    ChatMLFormat: _CHATML,
    Qwen3Format: _CHATML,
    Llama3Format: """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

""",
    Gemma2Format: """{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}user{{ end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
""",
    Phi3Format: """{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
""",
    MistralFormat: """{{- range .Messages }}{{ if eq .Role "assistant" }}{{ .Content }}</s>"""
    """{{ else }}[INST] {{ .Content }} [/INST]{{ end }}{{ end }}""",
    Llama2Format: """{{- range .Messages }}{{ if eq .Role "assistant" }} {{ .Content }} </s><s>"""
    """{{ else }}[INST] {{ .Content }} [/INST]{{ end }}{{ end }}""",
}


def modelfile_text(gguf_file: str, chat_format: Any, stop_tokens: Iterable[str], modelfile: str = "Modelfile") -> str:
    """The Modelfile for ``gguf_file`` (a file name in the Modelfile's folder): its template (when the
    chat format, a class or an instance, has one here), the system prompt the format adds when a
    conversation has none (ChatML's ``default_system``) and the stop tokens."""
    lines = [
        f"# Ollama model from {gguf_file}, written by tune run export:",
        f"#   ollama create my-model -f {modelfile} && ollama run my-model   (in this folder)",
        f"FROM ./{gguf_file}",
    ]
    kind = chat_format if isinstance(chat_format, type) or chat_format is None else type(chat_format)
    template = GO_TEMPLATES.get(kind) if kind is not None else None
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    system = getattr(chat_format, "default_system", None)
    if isinstance(system, str):
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{_quoted(token)}"' for token in dict.fromkeys(stop_tokens)]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
