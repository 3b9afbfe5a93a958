"""Reading and writing weight files: safetensors (single or sharded with an index) and the legacy
pickle formats, loaded safely (``torch.load(weights_only=True)``) and one file at a time so that
peak host memory stays near one copy of the model.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tuner.checkpoint.atomic import fsync_file
from tuner.checkpoint.files import SAFE_INDEX_NAME
from tuner.errors import CheckpointError

DEFAULT_MAX_SHARD_SIZE = "5GB"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a plain state dict, or one nested under ``model`` / ``state_dict``."""
    if isinstance(obj, dict) and obj and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "module"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{str(path)!r} does not hold a state dict (found {type(obj).__name__})",
            fix="point checkpointer.checkpoint_files at the model weight files",
        )
    return obj


def load_torch_file(path: str | Path, mmap: bool = True) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, memory-mapped where the file allows it."""
    path = Path(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zip" not in str(e).lower():
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{str(path)!r} holds Python objects other than tensors and cannot be loaded safely "
            f"(weights_only=True): {str(e).splitlines()[0]}",
            fix="convert it to safetensors with a trusted tool, or use a checkpoint saved as plain tensors",
        ) from e
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(
            f"cannot read {str(path)!r}: {e}",
            fix="the file is truncated or not a PyTorch file; download it again",
        ) from e


def load_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load one weight file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) to CPU tensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"cannot read {str(path)!r}: {e}",
                fix="the file is truncated or not a safetensors file; download it again",
            ) from e
    return _unwrap(load_torch_file(path), path)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (a CheckpointError naming the file when it
    cannot be read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"cannot read {str(path)!r}: {e}",
            fix="the file is truncated or not a safetensors file; save or download it again",
        ) from e


def iter_weight_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield ``(path, state_dict)`` file by file; drop each before reading the next."""
    for p in paths:
        yield Path(p), load_weight_file(p)


def _untie(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, no two sharing memory (safetensors refuses shared tensors)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(
                f"state dict entry {key!r} is a {type(t).__name__}, not a tensor",
                fix="pass plain tensors (dequantize / gather sharded parameters before saving)",
            )
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        # tied weights (two names, one tensor) are refused by safetensors: copy the second;
        # disjoint views of one storage (Phi-3's q/k/v split on load) are fine as they are
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident in seen:
            t = t.clone()
        seen.add(ident)
        out[key] = t
    return out


def write_safetensors_file(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write one safetensors file and fsync it. (Tests patch this to inject a failed write.)"""
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})
    fsync_file(path)


def write_torch_file(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` and fsync it."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_sharded_safetensors(
    state_dict: dict[str, torch.Tensor],
    folder: str | Path,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    filename_pattern: str = "model{suffix}.safetensors",
    index_name: str = SAFE_INDEX_NAME,
    metadata: dict[str, str] | None = None,
    safe_serialization: bool = True,
) -> list[str]:
    """Write ``state_dict`` as HF-style safetensors shards; return the file names written.

    One file ``model.safetensors`` when it fits ``max_shard_size``, else
    ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json`` (the layout
    ``transformers.save_pretrained`` writes and ``from_pretrained`` reads). With
    ``safe_serialization=False`` the files are ``pytorch_model*.bin`` (``torch.save``) instead.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    folder = Path(folder)
    state_dict = _untie(state_dict)
    if not safe_serialization:
        filename_pattern = filename_pattern.replace("model{suffix}.safetensors", "pytorch_model{suffix}.bin")
        index_name = index_name.replace("model.safetensors.index.json", "pytorch_model.bin.index.json")
    split = split_torch_state_dict_into_shards(
        state_dict, filename_pattern=filename_pattern, max_shard_size=max_shard_size
    )
    written = []
    for filename, names in split.filename_to_tensors.items():
        shard = {n: state_dict[n] for n in names}
        if safe_serialization:
            write_safetensors_file(shard, folder / filename, metadata)
        else:
            write_torch_file(shard, folder / filename)
        written.append(filename)
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(split.tensor_to_filename)}
        (folder / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        fsync_file(folder / index_name)
        written.append(index_name)
    return written
