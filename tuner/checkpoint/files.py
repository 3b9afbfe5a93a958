"""Which weight files make up a checkpoint: from a list, a ``{filename_format, max_filename}``
pattern, or discovered in the folder (``None`` / ``"auto"``).

Kept apart from reading and writing so the three checkpointers share one, well-tested answer to
"which files, in which order" and one error message when a file is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import CheckpointError, ConfigError

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
BIN_WEIGHTS_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"

_SHARD_RE = re.compile(r"-(\d+)-of-(\d+)\.")


def _listing(folder: Path, limit: int = 12) -> str:
    """A short listing of a folder for error messages."""
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_dir(checkpoint_dir: str | Path, what: str = "checkpointer.checkpoint_dir") -> Path:
    """Return ``checkpoint_dir`` as a Path, or raise if it is not an existing folder."""
    if checkpoint_dir is None or str(checkpoint_dir).strip() == "":
        raise ConfigError(f"{what} is not set", fix="point it at the folder that holds the model weights")
    path = Path(str(checkpoint_dir)).expanduser()
    if not path.is_dir():
        hint = (
            "it is a file; point at the folder that holds it"
            if path.is_file()
            else "download the model first (`tune download <repo> --output-dir <dir>`, which needs the "
            "Hugging Face Hub) or fix the path; offline, the quickstart's built-in model needs no download "
            "(smollm2/135M_lora_cpu)"
        )
        raise CheckpointError(f"{what} {str(path)!r} does not exist or is not a folder", fix=hint)
    return path


def _shard_key(path: Path) -> tuple[int, str]:
    match = _SHARD_RE.search(path.name)
    return (int(match.group(1)) if match else 0, path.name)


def _files_from_index(index_path: Path) -> list[Path]:
    """The distinct files an HF ``*.index.json`` refers to, in shard order."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"cannot read the shard index {str(index_path)!r}: {e}",
            fix="re-download the checkpoint or remove the broken index file",
        ) from e
    names = sorted(set(weight_map.values()), key=lambda n: _shard_key(Path(n)))
    paths = [index_path.parent / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"the shard index {str(index_path)!r} lists files that are missing: {', '.join(missing[:5])}"
            + (f", ... ({len(missing)} in all)" if len(missing) > 5 else ""),
            fix="the download is incomplete; download the checkpoint again",
        )
    return paths


def _hf_layout_files(d: Path, index_name: str, weights_name: str, shard_glob: str) -> list[Path]:
    """The files of one HF layout (safetensors or .bin): those its index names, else its single
    weights file, else the shards matching ``shard_glob`` in shard order (maybe none)."""
    if (d / index_name).is_file():
        return _files_from_index(d / index_name)
    if (d / weights_name).is_file():
        return [d / weights_name]
    return sorted(d.glob(shard_glob), key=_shard_key)


def discover_files(checkpoint_dir: Path, fmt: str) -> list[Path]:
    """Find the weight files of format ``fmt`` ("hf", "meta", "native") in ``checkpoint_dir``."""
    d = checkpoint_dir
    candidates: list[Path] = []
    if fmt in ("hf", "native"):
        candidates = _hf_layout_files(d, SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, "model-*-of-*.safetensors")
        if not candidates and fmt == "hf":
            candidates = _hf_layout_files(d, BIN_INDEX_NAME, BIN_WEIGHTS_NAME, "pytorch_model-*-of-*.bin")
        if not candidates and fmt == "native":
            candidates = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.pt"))
    elif fmt == "meta":
        candidates = sorted(d.glob("consolidated.*.pth")) or sorted(d.glob("*.pth"))
    if not candidates:
        expected = {
            "hf": f"{SAFE_WEIGHTS_NAME}, {SAFE_INDEX_NAME} with its shards, or {BIN_WEIGHTS_NAME}",
            "meta": "consolidated.00.pth",
            "native": "model.safetensors (tuner keys) or *.pt",
        }[fmt]
        raise CheckpointError(
            f"no {fmt} weight files found in {str(d)!r} (looked for {expected}; the folder has: {_listing(d)})",
            fix="set checkpointer.checkpoint_files to the weight files, or use the checkpointer that matches the "
            "format",
        )
    return candidates


@dataclass(frozen=True)
class FormattedCheckpointFiles:
    """Shard file names from a pattern (torchtune's class): ``filename_format`` with two ``{}``
    (shard number, shard count) and ``max_filename``, the shard count as written in the names
    (a string such as "00004": a YAML number would lose its zeros)."""

    filename_format: str
    max_filename: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FormattedCheckpointFiles":
        fix = 'use {filename_format: "model-{}-of-{}.safetensors", max_filename: "00004"}'
        if "filename_format" not in d or "max_filename" not in d:
            raise ConfigError(
                "Must pass 'filename_format' and 'max_filename' keys to generate checkpoint filenames, got "
                f"{dict(d)!r}",
                fix,
            )
        fmt, max_name = d["filename_format"], d["max_filename"]
        if not isinstance(max_name, str):
            raise ConfigError(
                f"`max_filename` must be a string, but found {type(max_name).__name__} {max_name!r}",
                'quote it in the YAML, e.g. max_filename: "00004"',
            )
        if not isinstance(fmt, str) or fmt.count("{}") != 2:
            raise ConfigError(
                f"{fmt!r} is not a valid pattern: filename_format must have exactly two placeholders (shard number, "
                "shard count)",
                fix,
            )
        if not max_name.isdigit() or int(max_name) < 1:
            raise ConfigError(
                f"max_filename {max_name!r} is not a positive number",
                'write the number of shards as it appears in the file names, e.g. "00004"',
            )
        return cls(fmt, max_name)

    def build_checkpoint_filenames(self) -> list[str]:
        width = len(self.max_filename)
        return [
            self.filename_format.format(str(i).zfill(width), self.max_filename)
            for i in range(1, int(self.max_filename) + 1)
        ]


def check_outdir_not_in_ckptdir(ckpt_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder equal to or inside the checkpoint folder (torchtune's check)."""
    ckpt, out = Path(ckpt_dir).resolve(), Path(out_dir).resolve()
    if out == ckpt or ckpt in out.parents:
        raise ConfigError(
            f"The output directory cannot be the same as or a subdirectory of the checkpoint directory. Found {ckpt} "
            f"and {out}",
            "set output_dir outside checkpointer.checkpoint_dir",
        )


def resolve_files(checkpoint_dir: Path, checkpoint_files: Any, fmt: str) -> list[Path]:
    """Turn the ``checkpoint_files`` setting into existing paths, in load order.

    ``checkpoint_files`` is a list of names (relative to ``checkpoint_dir`` or absolute), a single
    name, a ``{filename_format, max_filename}`` mapping, or ``None`` / ``"auto"`` to discover. An
    ``*.index.json`` name expands to the shards it lists.
    """
    if checkpoint_files is None or (
        isinstance(checkpoint_files, str) and checkpoint_files.strip().lower() in ("", "auto")
    ):
        return discover_files(checkpoint_dir, fmt)
    if isinstance(checkpoint_files, Mapping):
        names = FormattedCheckpointFiles.from_dict(checkpoint_files).build_checkpoint_filenames()
    elif isinstance(checkpoint_files, (str, Path)):
        names = [str(checkpoint_files)]
    else:
        try:
            names = [str(n) for n in checkpoint_files]
        except TypeError:
            raise ConfigError(
                f"checkpointer.checkpoint_files {checkpoint_files!r} is neither a list of file names nor a pattern",
                fix='give a list, {filename_format: ..., max_filename: ...}, or "auto"',
            ) from None
    if not names:
        return discover_files(checkpoint_dir, fmt)
    paths: list[Path] = []
    missing: list[str] = []
    for name in names:
        p = Path(name).expanduser()
        p = p if p.is_absolute() else checkpoint_dir / p
        if not p.is_file():
            missing.append(name)
        elif p.name.endswith(".index.json"):
            paths.extend(_files_from_index(p))
        else:
            paths.append(p)
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} missing in all)" if len(missing) > 5 else "")
        raise CheckpointError(
            f"checkpoint file(s) not found in {str(checkpoint_dir)!r}: {shown} (the folder has: "
            f"{_listing(checkpoint_dir)})",
            fix='fix checkpointer.checkpoint_files, or set it to "auto" to find the files',
        )
    # keep order, drop duplicates
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]
