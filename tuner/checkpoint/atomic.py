"""Atomic checkpoint folders: write into a temporary folder, fsync, rename into place.

A checkpoint is the folder ``output_dir/step_<N>/``. It is written as
``output_dir/.tmp-step_<N>-<pid>/``, every file is fsynced, the completion marker
(`MARKER_NAME`, a small JSON manifest) is written last, the folder is fsynced and then renamed to
its final name (one ``rename`` system call, atomic on POSIX file systems). Discovery only counts
``step_<N>`` folders that hold the marker, so a kill at any moment leaves every earlier checkpoint
intact and never makes a half-written folder look like a checkpoint. A model folder outside a run
(`save_model_folder`, which merge uses) is published the same way (`atomic_folder`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.errors import CheckpointError

MARKER_NAME = "CHECKPOINT_COMPLETE"
_STEP_RE = re.compile(r"^step_(\d+)$")
_TMP_RE = re.compile(r"^\.tmp-step_(\d+)-(\d+)$")
_OLD_RE = re.compile(r"^\.old-step_(\d+)-(\d+)$")


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to stable storage."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (new names, renames) to stable storage; a no-op where unsupported."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and Windows) cannot fsync a directory
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file and fsync it."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    return f"step_{int(step)}"


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The completion manifest of a checkpoint folder, or None when the folder is not complete."""
    path = Path(folder) / MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as ``(step, folder)``, oldest step first.

    Only ``step_<N>`` folders with the completion marker count. A ``.old-step_<N>-*`` folder (the
    previous copy of a step that was being replaced when the process died) counts when no complete
    ``step_<N>`` exists.
    """
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found: dict[int, Path] = {}
    old: dict[int, Path] = {}
    for child in out.iterdir():
        m = _STEP_RE.match(child.name)
        if m and child.is_dir() and read_marker(child) is not None:
            found[int(m.group(1))] = child
            continue
        m = _OLD_RE.match(child.name)
        if m and child.is_dir() and read_marker(child) is not None:
            old[int(m.group(1))] = child
    for step, folder in old.items():
        found.setdefault(step, folder)
    return sorted(found.items())


def latest_checkpoint(output_dir: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint (highest step) in ``output_dir``, or None."""
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def remove_stale_temporaries(output_dir: str | Path) -> None:
    """Delete leftovers of interrupted saves.

    ``.tmp-step_*`` folders of processes (on this host) that no longer run, and ``.old-step_<N>-*``
    copies whose ``step_<N>`` is complete.
    """
    out = Path(output_dir)
    if not out.is_dir():
        return
    for child in out.iterdir():
        m = _TMP_RE.match(child.name)
        if m and child.is_dir() and not _pid_alive(int(m.group(2))):
            shutil.rmtree(child, ignore_errors=True)
            continue
        m = _OLD_RE.match(child.name)
        if m and child.is_dir() and not _pid_alive(int(m.group(2))):
            if read_marker(out / step_dir_name(int(m.group(1)))) is not None:
                shutil.rmtree(child, ignore_errors=True)


def prune_checkpoints(output_dir: str | Path, keep_last_n: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last_n`` complete checkpoints; never ``protect``.

    Returns the folders removed. The marker goes first so that an interrupted delete leaves a
    folder that discovery ignores, never a damaged one that it would pick.
    """
    if keep_last_n is None:
        return []
    ckpts = list_checkpoints(output_dir)
    doomed = [folder for _, folder in ckpts[: max(0, len(ckpts) - int(keep_last_n))]]
    removed = []
    for folder in doomed:
        if protect is not None and folder.resolve() == Path(protect).resolve():
            continue
        try:
            (folder / MARKER_NAME).unlink()
        except OSError:
            pass
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        fsync_dir(output_dir)
    return removed


def _make_parent(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(
            f"cannot create the output folder {str(folder)!r}: {e}", fix=f"set {key} to a writable folder"
        ) from e


@contextmanager
def atomic_folder(final: str | Path, manifest: dict[str, Any], key: str = "output_dir") -> Iterator[Path]:
    """Yield a temporary folder beside ``final`` (``.tmp-<name>-<pid>``) to write into; publish it
    as ``final`` on success.

    On normal exit: fsync every file, write the marker (``manifest`` as it is then, plus the files
    written and the time), fsync the folder, rename it to ``final`` (an existing ``final`` is moved
    aside first and removed after, so a kill in between leaves a complete copy) and fsync the
    parent. On an exception the temporary folder is removed and nothing else is touched. ``key``
    names the config key of the parent folder in the error when it cannot be created.
    """
    final = Path(final)
    out = final.parent
    _make_parent(out, key)
    tmp = out / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        files = []
        for child in tmp.rglob("*"):
            if child.is_file():
                fsync_file(child)
                files.append(child.relative_to(tmp).as_posix())
            elif child.is_dir():
                fsync_dir(child)
        marker = {**manifest, "files": sorted(files), "time": time.time()}
        write_text(tmp / MARKER_NAME, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        fsync_dir(tmp)
        if final.exists():
            # Replacing a folder (e.g. the epoch-end save of a step that was just saved): move the
            # old copy aside first; discovery still finds it under .old-* should we die here.
            old = out / f".old-{final.name}-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_checkpoint_dir(output_dir: str | Path, step: int, manifest: dict[str, Any]) -> Iterator[Path]:
    """`atomic_folder` for checkpoint ``step`` (``output_dir/step_<N>``, the step recorded in the
    marker), after removing what interrupted saves left in ``output_dir``."""
    out = Path(output_dir)
    _make_parent(out, "checkpointer.output_dir")
    remove_stale_temporaries(out)
    manifest["step"] = int(step)
    with atomic_folder(out / step_dir_name(step), manifest, key="checkpointer.output_dir") as tmp:
        yield tmp
