"""The top-level keys of the generate, merge and eval recipes, with their types and ranges.

`InferenceSettings` are the keys that load a model (base + adapters); each recipe adds its own.
`tune validate` and the recipes check a config against the same classes (see
`tuner.config.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.checkpoint.gguf_write import TENSOR_TYPES
from tuner.config.settings import component, node, setting
from tuner.devices import CONFIG_DTYPES


@dataclass(frozen=True)
class InferenceSettings:
    """How to load the model: base builder, checkpointer, adapters, device and dtype."""

    model: Any = component(required=True, doc="the base model builder (not a lora_* one)")
    checkpointer: Any = component(required=True)
    tokenizer: Any = component()
    adapter_dir: str | None = setting(
        None, str, doc="an adapter folder, a run's step_N folder, or a run's output_dir (newest step)"
    )
    adapters: Any = node(doc="{name: folder}: several adapters over one base")
    adapter: str | None = setting(None, str, doc="the adapter active by default (base for none)")
    device: str | None = setting(None, str)
    dtype: str | None = setting(
        None,
        str,
        choices=CONFIG_DTYPES,
        nullable=True,
        doc="null: the dtype the run trained in (saved with the checkpoint)",
    )
    seed: int | None = setting(None, int)
    output_dir: str | None = setting(None, str)


@dataclass(frozen=True)
class GenerationSettings:
    """What `tune run generate` answers and how it samples."""

    prompt: Any = node()
    messages: Any = node()
    system: str | None = setting(None, str)
    chat_format: bool = setting(True, bool)
    max_new_tokens: int = setting(256, int, min=1)
    temperature: float = setting(0.0, float, min=0)
    top_k: int | None = setting(None, int, min=1)
    top_p: float | None = setting(None, float, min=0, max=1, min_exclusive=True)
    chat: bool = setting(False, bool)
    interactive: bool = setting(False, bool)
    output_file: str | None = setting(None, str)
    enable_kv_cache: bool = setting(True, bool)
    batch_size: int = setting(
        1, int, min=1, doc="prompts answered together; each row uses its own adapter over the unmerged base"
    )


@dataclass(frozen=True)
class MergeSettings:
    """`tune run merge` adds no keys: ``output_dir`` (required there) is the merged folder."""


@dataclass(frozen=True)
class ExportSettings:
    """What `tune run export` writes: one GGUF file (llama.cpp, Ollama, LM Studio) and an Ollama Modelfile."""

    output_file: str | None = setting(None, str, doc="the .gguf file to write (must not exist yet)")
    tensor_type: str = setting(
        "f16", str, choices=tuple(TENSOR_TYPES), doc="f32 / f16 / bf16 / q8_0 (norms and biases stay f32)"
    )
    modelfile: bool = setting(True, bool, doc="also write an Ollama Modelfile next to the file")
    tokenizer_dir: str | None = setting(
        None,
        str,
        doc="the folder with tokenizer.json / tokenizer.model and tokenizer_config.json "
        "(default: checkpointer.checkpoint_dir)",
    )
    name: str | None = setting(None, str, doc="general.name in the file (default: the family's title)")


@dataclass(frozen=True)
class EvalSettings:
    """What `tune run eval` scores."""

    dataset: Any = component()
    batch_size: int = setting(1, int, min=1)
    max_batches: int | None = setting(None, int, min=1)
    tasks: Any = node(doc="lm-eval task names")
    num_fewshot: int | None = setting(None, int, min=0)
    limit: float | None = setting(None, float, min=0, min_exclusive=True)
    max_gen_toks: int = setting(256, int, min=1)
    max_seq_length: int | None = setting(None, int, min=1, doc="torchtune's key: the longest context lm-eval may give")
    include_path: str | None = setting(None, str)
    output_file: str | None = setting(None, str)
