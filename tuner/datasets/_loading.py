"""``datasets.load_dataset`` with errors a person can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from tuner.errors import DataError
from tuner.hub import hub_reachable, use_local_cache_only

# Local formats datasets can read, by file extension.
_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text", ".arrow": "arrow"}
_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas"}


def _local_paths(data_files: Any) -> list[str]:
    """Every path named in data_files (a str, a list, or a split -> str|list mapping)."""
    if data_files is None:
        return []
    if isinstance(data_files, (str, os.PathLike)):
        return [os.fspath(data_files)]
    if isinstance(data_files, dict):
        return [p for v in data_files.values() for p in _local_paths(v)]
    return [p for v in data_files for p in _local_paths(v)]


def load_hf_dataset(source: str, data_files: Any = None, split: str = "train", **load_dataset_kwargs: Any):
    """Load ``source`` (a local format name with ``data_files``, a local file, or a hub dataset name).

    A missing local file, an unreadable file, an offline hub name and an empty split each raise
    a DataError that says what to fix.
    """
    source = os.fspath(source)
    # A path to a file as source: infer the format from its extension.
    if data_files is None and Path(source).suffix.lower() in _FORMATS:
        if not Path(source).is_file():
            raise DataError(f"data file not found: {source}", "check the path in the dataset config")
        data_files, source = source, _FORMATS[Path(source).suffix.lower()]
    for p in _local_paths(data_files):
        if "://" not in p and not any(ch in p for ch in "*?[") and not Path(p).exists():
            raise DataError(f"data file not found: {p}", "check dataset.data_files in the config")
    is_local = source in _BUILDERS or Path(source).exists()
    hub_offline = not is_local and not hub_reachable()
    if hub_offline:
        use_local_cache_only()  # a dataset already in the local cache still loads, without a minute of retries
    import datasets

    try:
        ds = datasets.load_dataset(source, data_files=data_files, split=split, **load_dataset_kwargs)
    except DataError:
        raise
    except ValueError as e:
        if "split" in str(e).lower() or "Unknown split" in str(e):
            raise DataError(f"dataset {source!r} has no split {split!r} ({e})", "set dataset.split") from None
        raise DataError(f"cannot load dataset {source!r}: {e}", _fix(source, is_local, data_files)) from None
    except Exception as e:  # network failures, missing hub datasets, malformed files, ...
        if hub_offline:
            raise DataError(
                f"dataset {source!r} comes from the Hugging Face Hub, which cannot be reached from here, "
                "and it is not in the local datasets cache",
                "use local data (dataset.source=json dataset.data_files=<file.json>), or run once with network access",
            ) from None
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        cause = e.__cause__ or e.__context__
        if cause is not None and str(cause):
            msg += f" ({str(cause).splitlines()[0]})"
        what = f"{source} file(s) {data_files}" if data_files is not None else f"dataset {source!r}"
        raise DataError(f"cannot load {what}: {type(e).__name__}: {msg}", _fix(source, is_local, data_files)) from None
    if len(ds) == 0:
        raise DataError(f"dataset {source!r} (split {split!r}) is empty", "check the data file and the split")
    return ds


def where(source: str, data_files: Any = None) -> str:
    """The data file(s) when local, else the dataset name: what error messages point at."""
    if data_files is not None:
        return f"data file {data_files}" if isinstance(data_files, str) else f"data files {data_files}"
    return f"dataset {source!r}"


def filter_rows(data: Any, filter_fn: Callable[[Mapping[str, Any]], bool], source: str) -> Any:
    """The rows ``filter_fn`` keeps (a HF dataset's own ``filter``, or a list); an error if none."""
    kept = data.filter(filter_fn) if hasattr(data, "filter") else [row for row in data if filter_fn(row)]
    if len(kept) == 0:
        raise DataError(f"filter_fn removed every row of {source!r}", "loosen filter_fn")
    return kept


def _fix(source: str, is_local: bool, data_files: Optional[Any]) -> str:
    if is_local or data_files is not None:
        return "check that the file is valid in the format named by source (json/jsonl, csv, parquet, text)"
    return (
        "check the dataset name; without network access, download it first or give a local file: "
        "source=json data_files=<path>"
    )
