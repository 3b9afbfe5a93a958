"""Names of the model families a checkpointer can convert (``model_type`` in the YAML).

The names are torchtune's (``LLAMA3_2``, ``QWEN2``, ...) so torchtune configs port as they are.
The key maps themselves live in `tuner.models.convert`; this module only validates the name so a
typo fails before any weight is read.
"""
from __future__ import annotations

from difflib import get_close_matches

from tuner.errors import ConfigError

#: Fallback list when the model zoo is not importable (it publishes ``convert.MODEL_TYPES``).
KNOWN_MODEL_TYPES: tuple[str, ...] = ("LLAMA2", "LLAMA3", "LLAMA3_2", "MISTRAL", "QWEN2", "GEMMA2", "PHI3_MINI", "SMOLLM2")

#: Other spellings people write, mapped to the name the key maps use.
ALIASES: dict[str, str] = {"LLAMA3_1": "LLAMA3", "QWEN2_5": "QWEN2", "PHI3": "PHI3_MINI"}


def _known_model_types() -> tuple[str, ...]:
    """The model zoo's list when it is importable, else ours."""
    try:
        from tuner.models.convert import MODEL_TYPES  # lazy: the zoo may import this package
    except ImportError:
        return KNOWN_MODEL_TYPES
    return tuple(MODEL_TYPES)


def normalize_model_type(model_type: object) -> str:
    """Return ``model_type`` as its canonical upper-case name, or raise a ConfigError.

    Accepts a string in any case (``"llama3_2"``), an alias (``LLAMA3_1`` -> ``LLAMA3``,
    ``QWEN2_5`` -> ``QWEN2``) or an enum member (uses its ``name``).
    """
    if model_type is None or (isinstance(model_type, str) and not model_type.strip()):
        raise ConfigError(
            "checkpointer.model_type is not set",
            fix=f"set it to one of {', '.join(_known_model_types())}",
        )
    name = str(getattr(model_type, "name", model_type)).strip().upper()
    name = ALIASES.get(name, name)
    known = _known_model_types()
    if name not in known:
        close = get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"unknown checkpointer.model_type {model_type!r}",
            fix=f"{hint}use one of {', '.join(known)}",
        )
    return name
