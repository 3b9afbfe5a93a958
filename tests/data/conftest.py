"""Tiny tokenizers trained at test time (SentencePiece, byte-level BPE, a tiktoken ranks file); the
real SmolLM2 tokenizer and the chat data are the session fixtures of tests/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from tiny_tokenizers import (  # noqa: E402
    write_gemma_json,
    write_phi3_json,
    write_qwen_files,
    write_sp_model,
    write_tiktoken_ranks,
)


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory) -> str:
    """A tiny Llama-2-style SentencePiece BPE model (byte fallback, dummy prefix, <unk>=0 <s>=1 </s>=2)."""
    return write_sp_model(tmp_path_factory.mktemp("sp") / "tokenizer.model")


@pytest.fixture(scope="session")
def qwen_files(tmp_path_factory) -> dict:
    """tokenizer.json plus vocab.json/merges.txt of a tiny Qwen2.5-style tokenizer."""
    return write_qwen_files(tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="session")
def gemma_json(tmp_path_factory) -> str:
    return write_gemma_json(tmp_path_factory.mktemp("gemma") / "tokenizer.json")


@pytest.fixture(scope="session")
def phi3_json(tmp_path_factory, sp_model) -> str:
    """Phi-3-style tokenizer.json: the SentencePiece model converted as transformers does, plus chat tokens."""
    return write_phi3_json(tmp_path_factory.mktemp("phi3") / "tokenizer.json", sp_model)


@pytest.fixture(scope="session")
def tiktoken_file(tmp_path_factory) -> str:
    """A small tiktoken ranks file (base64 token, rank per line) from a trained byte-level BPE."""
    return write_tiktoken_ranks(tmp_path_factory.mktemp("tiktoken") / "tokenizer.model")
