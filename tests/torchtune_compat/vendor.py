"""Vendor torchtune 0.6.1's unit tests into ``vendor/`` with the rename ``torchtune`` -> ``tuner``.

Write (needs a git clone of pytorch/torchtune that has the tag):

    python tests/torchtune_compat/vendor.py --source /path/to/torchtune.git

Check (needs nothing but this folder):

    python tests/torchtune_compat/vendor.py --check [--source /path/to/torchtune.git]

The rename is the only change: in every ``.py`` and ``.yaml`` file the string ``torchtune`` becomes
``tuner``; every other file is copied byte for byte. Those files contain no ``tuner`` upstream
(checked when vendoring), so the rename can be undone: ``--check`` turns each vendored file back
into upstream's bytes and compares its git blob id with the one recorded in ``manifest.json`` (the
ids of tag v0.6.1's tree, which anyone can look up on GitHub). With ``--source`` it also checks the
manifest against the tag itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = HERE / "vendor"
MANIFEST = HERE / "manifest.json"
TAG = "v0.6.1"
OLD, NEW = "torchtune", "tuner"
RENAMED_SUFFIXES = (".py", ".yaml")
# Other text files must not mention torchtune (binary assets, e.g. a SentencePiece model trained on
# text that does, are copied as they are).
TEXT_SUFFIXES = (".json", ".txt", ".md")
# Files of ours inside vendor/ (not upstream): the pytest config of the vendored run.
HARNESS_FILES = ("pytest.ini",)

# Test files with at least one test in the compatibility denominator (EXCLUDED.md lists the rest).
TEST_FILES = [
    "tests/torchtune/config/test_instantiate.py",
    "tests/torchtune/config/test_parse.py",
    "tests/torchtune/config/test_validate.py",
    "tests/torchtune/data/test_collate.py",
    "tests/torchtune/data/test_data_utils.py",
    "tests/torchtune/data/test_messages.py",
    "tests/torchtune/data/test_prompt_templates.py",
    "tests/torchtune/datasets/test_alpaca_dataset.py",
    "tests/torchtune/datasets/test_chat_dataset.py",
    "tests/torchtune/datasets/test_cnn_dailymail_dataset.py",
    "tests/torchtune/datasets/test_concat_dataset.py",
    "tests/torchtune/datasets/test_grammar_dataset.py",
    "tests/torchtune/datasets/test_instruct_dataset.py",
    "tests/torchtune/datasets/test_packed_dataset.py",
    "tests/torchtune/datasets/test_samsum_dataset.py",
    "tests/torchtune/datasets/test_sft_dataset.py",
    "tests/torchtune/datasets/test_slimorca_dataset.py",
    "tests/torchtune/datasets/test_text_completion_dataset.py",
    "tests/torchtune/datasets/test_wikitext_dataset.py",
    "tests/torchtune/modules/peft/test_dora.py",
    "tests/torchtune/modules/peft/test_lora.py",
    "tests/torchtune/modules/peft/test_utils.py",
    "tests/torchtune/modules/loss/test_ce_chunked_output_loss.py",
    "tests/torchtune/modules/transforms/tokenizers/test_hf_tokenizer.py",
    "tests/torchtune/modules/transforms/tokenizers/test_sentencepiece.py",
    "tests/torchtune/modules/transforms/tokenizers/test_tiktoken.py",
    "tests/torchtune/modules/transforms/tokenizers/test_utils.py",
    "tests/torchtune/training/checkpointing/test_checkpointer.py",
    "tests/torchtune/training/checkpointing/test_checkpointer_utils.py",
    "tests/torchtune/training/test_memory.py",
    "tests/torchtune/training/test_metric_logging.py",
    "tests/torchtune/training/test_model_util.py",
    "tests/torchtune/training/test_precision.py",
    "tests/torchtune/training/test_profiler.py",
    "tests/torchtune/training/test_seed.py",
    "tests/torchtune/models/gemma/test_gemma_tokenizer.py",
    "tests/torchtune/models/llama2/test_llama2_tokenizer.py",
    "tests/torchtune/models/llama3/test_llama3_tokenizer.py",
    "tests/torchtune/models/mistral/test_mistral_tokenizer.py",
    "tests/torchtune/models/phi3/test_phi3_tokenizer.py",
    "tests/torchtune/models/qwen2_5/test_tokenizer.py",
]
# What those tests import or read: helpers, package markers and the assets they open.
SUPPORT_FILES = [
    "tests/__init__.py",
    "tests/common.py",
    "tests/test_utils.py",
    "tests/torchtune/__init__.py",
    "tests/torchtune/datasets/__init__.py",
    "tests/torchtune/models/__init__.py",
    "tests/torchtune/models/phi3/__init__.py",
    "tests/torchtune/models/qwen2_5/__init__.py",
    "tests/torchtune/modules/__init__.py",
    "tests/torchtune/modules/peft/__init__.py",
    "tests/assets/README.md",
    "tests/assets/chat_tiny.json",
    "tests/assets/generation_config.json",
    "tests/assets/instruct_tiny.json",
    "tests/assets/invalid_dummy_config.yaml",
    "tests/assets/m.model",
    "tests/assets/rgb_pytorch.png",
    "tests/assets/tiktoken_small.model",
    "tests/assets/tiny_bpe_merges.txt",
    "tests/assets/tiny_bpe_vocab.json",
    "tests/assets/tokenizer.json",
    "tests/assets/tokenizer_config.json",
    "tests/assets/valid_dummy_config.yaml",
]
FILES = sorted(TEST_FILES + SUPPORT_FILES)


def git_blob_id(data: bytes) -> str:
    """The id git gives a file with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def renamed(path: str) -> bool:
    return path.endswith(RENAMED_SUFFIXES)


def rename(data: bytes) -> bytes:
    return data.replace(OLD.encode(), NEW.encode())


def unrename(data: bytes) -> bytes:
    return data.replace(NEW.encode(), OLD.encode())


def _git(source: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(source), *args], check=True, capture_output=True).stdout


def upstream_files(source: Path) -> dict[str, tuple[str, bytes]]:
    """path -> (blob id, bytes) at TAG for every vendored path."""
    out = {}
    for line in _git(source, "ls-tree", "-r", TAG, "--", *FILES).decode().splitlines():
        meta, path = line.split("\t", 1)
        blob = meta.split()[2]
        out[path] = (blob, _git(source, "cat-file", "blob", blob))
    missing = sorted(set(FILES) - set(out))
    if missing:
        raise SystemExit(f"{TAG} has no {missing}")
    return out


def write(source: Path) -> None:
    files = upstream_files(source)
    for path, (_, data) in files.items():
        if renamed(path) and NEW.encode() in data:
            raise SystemExit(f"{path} already contains {NEW!r} upstream; the rename would not be reversible")
        if not renamed(path) and path.endswith(TEXT_SUFFIXES) and OLD.encode() in data:
            raise SystemExit(f"{path} mentions {OLD!r} but is not renamed; add its suffix to RENAMED_SUFFIXES")
    for old in SUITE.rglob("*"):
        if old.is_file() and old.relative_to(SUITE).as_posix() not in HARNESS_FILES:
            old.unlink()
    for path, (_, data) in files.items():
        dest = SUITE / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(rename(data) if renamed(path) else data)
    commit = _git(source, "rev-parse", f"{TAG}^{{commit}}").decode().strip()
    manifest = {
        "repository": "https://github.com/pytorch/torchtune",
        "tag": TAG,
        "commit": commit,
        "rename": {"from": OLD, "to": NEW, "in": list(RENAMED_SUFFIXES)},
        "files": {path: {"blob": blob, "renamed": renamed(path)} for path, (blob, _) in sorted(files.items())},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"vendored {len(files)} files of {TAG} ({commit}) into {SUITE}")


def check(source: Path | None) -> list[str]:
    """Problems with the vendored copy (empty when it is upstream's files with the rename only)."""
    manifest = json.loads(MANIFEST.read_text())
    problems = []
    if sorted(manifest["files"]) != FILES:
        problems.append("manifest.json does not list exactly the files vendor.py vendors; re-run vendor.py")
    for path, entry in manifest["files"].items():
        f = SUITE / path
        if not f.is_file():
            problems.append(f"{path}: missing")
            continue
        data = f.read_bytes()
        if entry["renamed"]:
            if OLD.encode() in data:
                problems.append(f"{path}: still contains {OLD!r}")
            data = unrename(data)
        if git_blob_id(data) != entry["blob"]:
            problems.append(f"{path}: differs from upstream {TAG} (after undoing the rename)")
    extra = sorted(
        p.relative_to(SUITE).as_posix()
        for p in SUITE.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.relative_to(SUITE).as_posix() not in manifest["files"]
        and p.relative_to(SUITE).as_posix() not in HARNESS_FILES
    )
    problems += [f"{p}: not an upstream file" for p in extra]
    if source is not None:
        for path, (blob, _) in upstream_files(source).items():
            if manifest["files"].get(path, {}).get("blob") != blob:
                problems.append(f"{path}: manifest blob is not {TAG}'s")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="a git clone of pytorch/torchtune that has the tag " + TAG)
    parser.add_argument("--check", action="store_true", help="verify the vendored copy instead of writing it")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.source)
        for p in problems:
            print(p, file=sys.stderr)
        print("vendored copy equals upstream with the rename" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    if args.source is None:
        parser.error("writing needs --source")
    write(args.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
