"""Write a tuner model and its tokenizer as one GGUF file, for llama.cpp, Ollama and LM Studio.

Why: those runtimes read GGUF only, and the usual route (building llama.cpp and running its
``convert_hf_to_gguf.py``) is what breaks for users. This writer is pure Python (the ``gguf`` package,
numpy) and writes what that converter writes for each architecture tuner supports:

- tensor names: the HF names (``tuner_to_hf``, fused projections fused) through gguf's own
  ``TensorNameMap`` for the architecture, the names llama.cpp loads;
- the ``llama`` architecture (Llama 2 / 3.x, Mistral, SmolLM2): q / k rows permuted to llama.cpp's
  interleaved rope layout; Llama 3.1's rope scaling as the ``rope_freqs`` tensor of per-frequency
  divisors; Gemma 2: norm weights stored as ``1 + w`` (llama.cpp's plain RMSNorm), soft-capping and
  the sliding window as metadata; Qwen 2.5 / 3: biases and q / k norms; Phi-3: fused qkv and gate-up;
- tensor types ``f32``, ``f16``, ``bf16`` and ``q8_0`` (the ``gguf`` package's reference quantizer, which
  is llama.cpp's): 1-D tensors (norms, biases, rope factors) stay F32, and a matrix whose rows are not
  a multiple of 32 falls back from Q8_0 to F16, as in llama.cpp's converter;
- the tokenizer (`tuner.checkpoint.gguf_vocab`) with special tokens and the chat template.

The file is written beside its final path and renamed into place, so it is complete or absent.
GGUF-specific facts (architecture per HF ``model_type``, llama.cpp's pre-tokenizer names) live here.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from tuner.checkpoint.atomic import fsync_dir, fsync_file
from tuner.checkpoint.gguf import import_gguf
from tuner.checkpoint.gguf_vocab import GGUFVocab, read_vocab
from tuner.checkpoint.hf_config import hf_config_from_model
from tuner.checkpoint.hf_keys import tuner_to_hf
from tuner.errors import CheckpointError, ConfigError, warn
from tuner.models.families import families, family


@dataclass(frozen=True)
class GGUFArch:
    """How llama.cpp's converter writes one HF architecture."""

    name: str  # general.architecture
    permute_qk: bool = False  # q / k rows to llama.cpp's interleaved rope layout
    norm_offset: float = 0.0  # added to every RMSNorm weight (Gemma's (1 + w) norm)
    sliding_window: bool = False  # the architecture honours <arch>.attention.sliding_window
    softcapping: bool = False  # attention and final logit soft-capping


#: HF config.json model_type -> the GGUF architecture llama.cpp's convert_hf_to_gguf.py writes it as
ARCHITECTURES: dict[str, GGUFArch] = {
    "llama": GGUFArch("llama", permute_qk=True),
    "mistral": GGUFArch("llama", permute_qk=True),  # llama.cpp converts HF Mistral as llama
    "qwen2": GGUFArch("qwen2"),
    "qwen3": GGUFArch("qwen3"),
    "gemma2": GGUFArch("gemma2", norm_offset=1.0, sliding_window=True, softcapping=True),
    "phi3": GGUFArch("phi3", sliding_window=True),
}

#: family name -> llama.cpp's pre-tokenizer name for its byte-level BPE (tokenizer.ggml.pre), the name
#: llama.cpp's converter finds for the released tokenizer; SentencePiece vocabularies are "default".
TOKENIZER_PRE = {
    "llama3": "llama-bpe",
    "llama3_1": "llama-bpe",
    "llama3_2": "llama-bpe",
    "llama3_3": "llama-bpe",
    "qwen2_5": "qwen2",
    "qwen3": "qwen2",
    "smollm2": "smollm",
}

#: config name -> (GGML tensor type name, llama.cpp's general.file_type name)
TENSOR_TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
}


def gguf_arch(model_type: str) -> GGUFArch:
    """The GGUF architecture of a family (by its HF model_type), or a ConfigError naming the ones there are."""
    spec = family(model_type)
    arch = ARCHITECTURES.get(spec.hf_model_type)
    if arch is None:
        known = sorted(f.name for f in families() if f.hf_model_type in ARCHITECTURES)
        raise ConfigError(
            f"{spec.title} ({spec.hf_model_type}) has no GGUF architecture that llama.cpp and transformers both read",
            fix=f"export one of: {', '.join(known)}, or merge to a Hugging Face folder with tune run merge",
        )
    return arch


@dataclass(frozen=True)
class GGUFSummary:
    path: Path
    tensor_type: str
    tensors: int
    bytes: int
    fallbacks: tuple[str, ...]  # matrices written as F16 because Q8_0 needs rows of 32
    vocab: GGUFVocab  # the tokenizer as written (token texts for stop tokens)


def write_gguf(
    model: torch.nn.Module,
    model_type: str,
    tokenizer_dir: str | Path,
    path: str | Path,
    tensor_type: str = "f16",
    name: str | None = None,
    tokenizer: Any = None,
) -> GGUFSummary:
    """Write ``model`` (a tuner ``TransformerDecoder``, merged) with the tokenizer of ``tokenizer_dir`` as
    the GGUF file ``path`` in ``tensor_type`` (``f32`` / ``f16`` / ``bf16`` / ``q8_0``); atomic.
    ``tokenizer`` (the family tokenizer) is read only for a tiktoken file without tokenizer.json."""
    gguf = import_gguf("writing GGUF files", "gguf")
    if tensor_type not in TENSOR_TYPES:
        raise ConfigError(
            f"unknown GGUF tensor type {tensor_type!r}", fix=f"use one of {', '.join(TENSOR_TYPES)} for tensor_type"
        )
    spec = family(model_type)
    arch = gguf_arch(model_type)
    config = hf_config_from_model(model, model_type)
    _check_llama_cpp_can_run(spec, arch, config)
    vocab = read_vocab(tokenizer_dir, config["vocab_size"], tokenizer)
    if vocab.model == "gpt2":
        pre = TOKENIZER_PRE.get(spec.name, "default")
    else:
        pre = "default"

    qtype = getattr(gguf.GGMLQuantizationType, TENSOR_TYPES[tensor_type][0])
    writer_tensors, fallbacks = _tensors(gguf, model, model_type, config, arch, qtype)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch.name)
        writer.add_type("model")
        writer.add_name(name or f"{spec.title} (tuner)")
        writer.add_file_type(getattr(gguf.LlamaFileType, TENSOR_TYPES[tensor_type][1]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _architecture_metadata(writer, arch, config)
        _tokenizer_metadata(writer, vocab, pre)
        for tensor_name, data, raw_dtype in writer_tensors:
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return GGUFSummary(path, tensor_type, len(writer_tensors), path.stat().st_size, tuple(fallbacks), vocab)


def _check_llama_cpp_can_run(spec: Any, arch: GGUFArch, config: Mapping[str, Any]) -> None:
    """Refuse what llama.cpp would run differently; warn where it differs only past a context length."""
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) != "llama3":
        raise ConfigError(f"rope scaling {scaling!r} has no GGUF form here", fix="export a model with llama3 rope")
    if spec.hf_model_type == "gemma2":
        # llama.cpp scales Gemma 2's queries by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 46-layer 27B.
        head_dim, per_head = config["head_dim"], config["hidden_size"] // config["num_attention_heads"]
        expected = per_head if config["num_hidden_layers"] == 46 else head_dim
        if config.get("query_pre_attn_scalar") != expected:
            raise ConfigError(
                f"Gemma 2 with query_pre_attn_scalar {config.get('query_pre_attn_scalar')} runs differently in "
                f"llama.cpp, which scales queries by 1/sqrt({expected})",
                fix="export a Gemma 2 model with the released query_pre_attn_scalar",
            )
    window = config.get("sliding_window")
    if window and not arch.sliding_window and window < config["max_position_embeddings"]:
        warn(
            f"llama.cpp runs {spec.title} in GGUF without its {window}-token sliding window: the outputs match "
            f"for contexts up to {window} tokens"
        )


def _tensors(
    gguf: Any,
    model: torch.nn.Module,
    model_type: str,
    config: Mapping[str, Any],
    arch: GGUFArch,
    qtype: Any,
) -> tuple[list[tuple[str, np.ndarray, Any]], list[str]]:
    """(GGUF name, data, raw dtype) for every tensor, in llama.cpp's layout and the chosen type."""
    # One tensor at a time in float32 (not a float32 copy of the whole model): the file's tensors, already
    # in their type, and the model are what is held.
    hf = tuner_to_hf({k: v for k, v in model.state_dict().items() if v.is_floating_point()}, model_type, config)
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch.name]
    names = gguf.get_tensor_name_map(arch_enum, config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    out: list[tuple[str, np.ndarray, Any]] = []
    fallbacks: list[str] = []
    if config.get("rope_scaling"):
        out.append(("rope_freqs.weight", llama3_rope_factors(config), None))
    for hf_name in list(hf):
        tensor = hf.pop(hf_name)
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise CheckpointError(
                f"no GGUF tensor name for {hf_name!r} in llama.cpp's {arch.name} architecture",
                fix="export a model of a supported family without extra modules",
            )
        data = tensor.detach().to("cpu", torch.float32).numpy()
        if arch.permute_qk and hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif arch.permute_qk and hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if arch.norm_offset and hf_name.endswith("norm.weight"):
            data = data + np.float32(arch.norm_offset)
        out.append(_typed(gguf, gguf_name, np.ascontiguousarray(data, dtype=np.float32), qtype, fallbacks))
    return out, fallbacks


def _typed(gguf: Any, name: str, data: np.ndarray, qtype: Any, fallbacks: list[str]) -> tuple[str, np.ndarray, Any]:
    Q = gguf.GGMLQuantizationType
    if data.ndim <= 1 or name.endswith("_norm.weight") or qtype == Q.F32:
        return name, data, None
    if qtype == Q.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] != 0:
        fallbacks.append(name)
        qtype = Q.F16
    if qtype == Q.F16:
        return name, data.astype(np.float16), None
    return name, gguf.quants.quantize(data, qtype), qtype


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q / k row order (interleaved rope pairs) from HF's rotate-half order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(config: Mapping[str, Any]) -> np.ndarray:
    """Llama 3.1's rope scaling as llama.cpp stores it: one divisor per rotary frequency (``rope_freqs``)."""
    scaling = config["rope_scaling"]
    base, dim = float(config["rope_theta"]), int(config["head_dim"])
    factor = float(scaling["factor"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _architecture_metadata(writer: Any, arch: GGUFArch, c: Mapping[str, Any]) -> None:
    heads, head_dim = c["num_attention_heads"], c["head_dim"]
    writer.add_context_length(int(c["max_position_embeddings"]))
    writer.add_embedding_length(int(c["hidden_size"]))
    writer.add_block_count(int(c["num_hidden_layers"]))
    writer.add_feed_forward_length(int(c["intermediate_size"]))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(c["num_key_value_heads"]))
    writer.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    writer.add_rope_freq_base(float(c["rope_theta"]))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_vocab_size(int(c["vocab_size"]))
    if arch.name == "gemma2" or head_dim * heads != c["hidden_size"]:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    if arch.softcapping:
        writer.add_attn_logit_softcapping(float(c["attn_logit_softcapping"]))
        writer.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
    if arch.sliding_window and c.get("sliding_window"):
        writer.add_sliding_window(int(c["sliding_window"]))


def _tokenizer_metadata(writer: Any, vocab: GGUFVocab, pre: str) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id}
    adders.update(unk=writer.add_unk_token_id, pad=writer.add_pad_token_id)
    for key, token_id in vocab.special_ids.items():
        adders[key](token_id)
    if vocab.add_bos is not None:
        writer.add_add_bos_token(vocab.add_bos)
    if vocab.add_eos is not None:
        writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
