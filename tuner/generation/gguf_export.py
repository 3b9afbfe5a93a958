"""`tune run export`: a model (base + merged adapter, or a fine-tuned folder) -> one GGUF file for
llama.cpp, Ollama and LM Studio, and an Ollama Modelfile next to it.

The model is loaded as merge loads it (`load_inference_model`, the adapter merged in the dtype it was
trained in), then written by `tuner.checkpoint.gguf_write.write_gguf` with the tokenizer files of
``tokenizer_dir`` (default: the checkpoint folder). Pure Python: no llama.cpp build, no network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from tuner.checkpoint.atomic import fsync_dir, write_text
from tuner.checkpoint.gguf import import_gguf
from tuner.checkpoint.gguf_write import GGUFSummary, gguf_arch, write_gguf
from tuner.errors import ConfigError
from tuner.generation.export import one_adapter_settings
from tuner.generation.loading import load_inference_model
from tuner.generation.modelfile import modelfile_text
from tuner.generation.settings import ExportSettings
from tuner.models.families import family


@dataclass(frozen=True)
class GGUFExport:
    gguf: GGUFSummary
    modelfile: Path | None


def modelfile_path(gguf_path: Path) -> Path:
    """Where the Modelfile of a GGUF file goes: beside it, ``<stem>.Modelfile``."""
    return gguf_path.with_suffix(".Modelfile")


def _target(output_file: str | None, with_modelfile: bool) -> Path:
    if output_file is None:
        raise ConfigError("output_file is not set", fix="set output_file to the .gguf file to write")
    path = Path(str(output_file)).expanduser()
    if path.suffix != ".gguf":
        raise ConfigError(f"output_file {str(path)!r} does not end in .gguf", fix="name the file <something>.gguf")
    for existing in [path, modelfile_path(path)] if with_modelfile else [path]:
        if existing.exists():
            raise ConfigError(
                f"{str(existing)!r} already exists; nothing was written",
                fix="choose another output_file, or remove the old file first",
            )
    return path


def export_gguf(cfg: DictConfig) -> GGUFExport:
    """Load the model of ``cfg`` (adapter merged) and write ``output_file`` (+ ``Modelfile``)."""
    settings, export = one_adapter_settings(cfg, ExportSettings, "export", "output_file")
    target = _target(export.output_file, export.modelfile)
    model_type = str(cfg.checkpointer.model_type)
    gguf_arch(model_type)  # fail before loading weights: a family llama.cpp and transformers cannot read
    import_gguf("writing GGUF files", "gguf")
    # dtype null: the dtype the run trained in (as merge); tensor_type decides what the file holds.
    loaded = load_inference_model(
        settings,
        with_tokenizer=settings.tokenizer is not None,
        keep_base=False,
    )
    tokenizer_dir = Path(export.tokenizer_dir or loaded.checkpointer.checkpoint_dir).expanduser()
    summary = write_gguf(
        loaded.model,
        model_type,
        tokenizer_dir,
        target,
        export.tensor_type,
        name=export.name,
        tokenizer=loaded.tokenizer,
    )
    modelfile = None
    if export.modelfile:
        tokens = summary.vocab.tokens
        stop_ids = loaded.tokenizer.stop_tokens if loaded.tokenizer is not None else []
        if not stop_ids and "eos" in summary.vocab.special_ids:
            stop_ids = [summary.vocab.special_ids["eos"]]
        chat_format = loaded.tokenizer.chat_format if loaded.tokenizer is not None else family(model_type).chat_format
        modelfile = modelfile_path(target)
        tmp = modelfile.with_name(f".{modelfile.name}.tmp")
        write_text(tmp, modelfile_text(target.name, chat_format, [tokens[i] for i in stop_ids], modelfile.name))
        os.replace(tmp, modelfile)
        fsync_dir(modelfile.parent)
    return GGUFExport(summary, modelfile)


def export_summary(result: GGUFExport) -> str:
    s = result.gguf
    text = f"GGUF file written to {s.path} ({s.bytes / 2**20:.1f} MiB, {s.tensors} tensors, {s.tensor_type})"
    if s.fallbacks:
        text += f"; {len(s.fallbacks)} matrices with rows not a multiple of 32 are f16 ({', '.join(s.fallbacks[:3])})"
    if result.modelfile is not None:
        text += f"\n[tuner] Ollama: cd {result.modelfile.parent} && ollama create my-model -f {result.modelfile.name}"
    text += f"\n[tuner] llama.cpp: llama-cli -m {s.path}"
    return text
