"""Each family's spec names its tokenizer builder and chat format: the builder (the dotted path the
configs use) gives a tokenizer that renders with that format."""

from __future__ import annotations

import pytest

from tuner.config import resolve_component
from tuner.models.families import families

# tokenizer file fixture of each tokenizer builder (tiny files trained at test time)
FILES = {
    "llama2_tokenizer": "sp_model",
    "mistral_tokenizer": "sp_model",
    "llama3_tokenizer": "tiktoken_file",
    "gemma2_tokenizer": "gemma_json",
    "phi3_mini_tokenizer": "phi3_json",
    "qwen2_5_tokenizer": "qwen_files",
    "qwen3_tokenizer": "qwen_files",
    "smollm2_tokenizer": "qwen_files",
}


@pytest.mark.parametrize("spec", families(), ids=lambda f: f.name)
def test_tokenizer_builder_renders_with_the_declared_chat_format(spec, request):
    builder = resolve_component(spec.tokenizer)
    files = request.getfixturevalue(FILES[builder.__name__])
    tok = builder(files["json"] if isinstance(files, dict) else files)
    assert type(tok.chat_format) is spec.chat_format
    tokens, mask = tok.tokenize_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}])
    assert tokens and len(mask) == len(tokens)
