"""Tiny tokenizers trained at test time (SentencePiece, byte-level BPE, a tiktoken ranks file) and
paths to the real data in ../shared/data."""
from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from tests_data_helpers import ALPACA_JSON  # noqa: E402


def training_texts() -> list[str]:
    rows = json.loads(ALPACA_JSON.read_text())
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows]
    # Make sure chat-format words and some non-ASCII are in the data.
    texts += ["[INST] <<SYS>> system user assistant model Hello world, fine-tuning! héllo wörld 你好 😀"] * 5
    return texts


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory) -> str:
    """A tiny Llama-2-style SentencePiece BPE model (byte fallback, dummy prefix, <unk>=0 <s>=1 </s>=2)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_texts()),
        model_writer=out,
        vocab_size=700,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=20000,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    path.write_bytes(out.getvalue())
    return str(path)


def train_bytelevel_bpe(vocab_size: int = 600):
    """A tiny GPT-2/Qwen-style byte-level BPE (all 256 bytes in the alphabet)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from tuner.data.tokenizers.qwen2_5 import QWEN2_PATTERN

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(training_texts(), trainer)
    return tok


def _with_added(tok, tokens: list[tuple[str, bool]]):
    from tokenizers import AddedToken

    for content, special in tokens:
        t = AddedToken(content, special=special, normalized=not special)
        (tok.add_special_tokens if special else tok.add_tokens)([t])
    return tok


@pytest.fixture(scope="session")
def qwen_files(tmp_path_factory) -> dict:
    """tokenizer.json plus vocab.json/merges.txt of a tiny Qwen2.5-style tokenizer."""
    from tuner.data.tokenizers.qwen2_5 import QWEN2_5_ADDED_TOKENS

    d = tmp_path_factory.mktemp("qwen")
    base = train_bytelevel_bpe()
    base.model.save(str(d))  # vocab.json, merges.txt of the base vocabulary
    tok = _with_added(base, QWEN2_5_ADDED_TOKENS)
    tok.save(str(d / "tokenizer.json"))
    return {"dir": str(d), "json": str(d / "tokenizer.json"), "vocab": str(d / "vocab.json"), "merges": str(d / "merges.txt")}


@pytest.fixture(scope="session")
def gemma_json(tmp_path_factory) -> str:
    tok = train_bytelevel_bpe()
    # Gemma's special tokens (ids differ from the real 0/1/2/106/107: the chat format looks them up).
    tok = _with_added(tok, [(t, True) for t in ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]])
    path = tmp_path_factory.mktemp("gemma") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def phi3_json(tmp_path_factory, sp_model) -> str:
    """Phi-3-style tokenizer.json: the SentencePiece model converted as transformers does, plus chat tokens."""
    from transformers import LlamaTokenizer

    kwargs = LlamaTokenizer.convert_to_native_format(vocab_file=sp_model, legacy=True)
    hf = LlamaTokenizer(**kwargs)
    tok = hf.backend_tokenizer
    extra = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|system|>", "<|end|>", "<|user|>"]
    # Phi-3's chat tokens are special and strip the whitespace to their right, as in its tokenizer.json.
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, rstrip=(t != "<|endoftext|>")) for t in extra])
    path = tmp_path_factory.mktemp("phi3") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiktoken_file(tmp_path_factory) -> str:
    """A small tiktoken ranks file (base64 token, rank per line) from a trained byte-level BPE."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tok = train_bytelevel_bpe(vocab_size=700)
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    # Single bytes first (ranks 0..255 by byte value), then merged tokens in merge order.
    singles = sorted((bytes([byte_decoder[t]]) for t, _ in vocab if len(t) == 1), key=lambda b: b[0])
    merged = [bytes(byte_decoder[c] for c in t) for t, _ in vocab if len(t) > 1]
    assert len(singles) == 256
    lines = [f"{base64.b64encode(b).decode()} {rank}" for rank, b in enumerate(singles + merged)]
    path = tmp_path_factory.mktemp("tiktoken") / "tokenizer.model"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
