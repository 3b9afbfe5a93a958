"""Export: a model (base + adapter merged, or a fine-tuned folder) -> one GGUF file for llama.cpp, Ollama
and LM Studio, plus an Ollama Modelfile beside it. Pure Python (the ``gguf`` package): no llama.cpp
build, no network.

    pip install 'tuner[gguf]'
    tune run export --config llama3_2/export adapter_dir=/tmp/tuner/llama3_2_1B/lora_single_device \
        output_file=/tmp/Llama-3.2-1B-tuned-q8_0.gguf tensor_type=q8_0
    ollama create my-model -f /tmp/Llama-3.2-1B-tuned-q8_0.Modelfile

The file holds what llama.cpp's own converter writes for the family: architecture metadata (rope,
norms, tied embeddings, Gemma 2's sliding window and soft-capping), the tokenizer with its special
tokens and chat template, and the weights in ``tensor_type``.

Config keys:

- ``model``, ``checkpointer``, ``adapter_dir``, ``device``, ``dtype``: as for merge (recipes/merge.py);
  the adapter is merged in the dtype it was trained in.
- ``output_file``: the .gguf file to write (must not exist yet).
- ``tensor_type`` (f16): f32, f16, bf16 or q8_0 (llama.cpp's Q8_0; norms and biases stay f32).
- ``modelfile`` (True): also write ``<output_file stem>.Modelfile`` for ``ollama create``.
- ``tokenizer``: the family tokenizer; its stop tokens and default system prompt go into the Modelfile.
- ``tokenizer_dir``: where tokenizer.json / tokenizer.model and tokenizer_config.json are (default:
  ``checkpointer.checkpoint_dir``).
- ``name``: the model's name in the file (default: the family's title).
"""

import sys

from omegaconf import DictConfig

from tuner import config
from tuner.generation.gguf_export import export_gguf, export_summary
from tuner.generation.settings import ExportSettings, InferenceSettings

SETTINGS = (InferenceSettings, ExportSettings)  # the top-level keys this recipe reads


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Write the GGUF file (and its Modelfile), then say where and how to run it."""
    result = export_gguf(cfg)
    print(f"[tuner] {export_summary(result)}", flush=True)


if __name__ == "__main__":
    sys.exit(recipe_main())
