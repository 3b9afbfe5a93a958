"""Tiny tokenizers trained at test time, written to files the tokenizer builders read: SentencePiece
models (Llama 2 / Mistral style, and Gemma's special-token layout), byte-level BPE (Qwen2.5's
tokenizer.json and vocab.json + merges.txt, Gemma 2's tokenizer.json), Phi-3's tokenizer.json and a
tiktoken ranks file (Llama 3). Shared by tests/data and tests/torchtune_configs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from tests.real_data import alpaca_rows


def training_texts() -> list[str]:
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in alpaca_rows()]
    # Make sure chat-format words and some non-ASCII are in the data.
    texts += ["[INST] <<SYS>> system user assistant model Hello world, fine-tuning! héllo wörld 你好 😀"] * 5
    return texts


def write_sp_model(path: Path, gemma: bool = False) -> str:
    """A tiny SentencePiece BPE model (byte fallback, dummy prefix): Llama 2's ids <unk>=0 <s>=1
    </s>=2, or with ``gemma`` Gemma's <pad>=0 <eos>=1 <bos>=2 <unk>=3 and its turn markers."""
    import sentencepiece as spm

    ids = (
        dict(
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            pad_piece="<pad>",
            eos_piece="<eos>",
            bos_piece="<bos>",
            unk_piece="<unk>",
            user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        )
        if gemma
        else dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    )
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_texts()),
        model_writer=out,
        vocab_size=700,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=20000,
        minloglevel=2,
        **ids,
    )
    Path(path).write_bytes(out.getvalue())
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


def write_qwen_files(folder: Path) -> dict:
    """tokenizer.json plus vocab.json/merges.txt of a tiny Qwen2.5-style tokenizer in ``folder``."""
    from tuner.data.tokenizers.qwen2_5 import QWEN2_5_ADDED_TOKENS

    folder = Path(folder)
    base = train_bytelevel_bpe()
    base.model.save(str(folder))  # vocab.json, merges.txt of the base vocabulary
    tok = _with_added(base, QWEN2_5_ADDED_TOKENS)
    tok.save(str(folder / "tokenizer.json"))
    return {
        "dir": str(folder),
        "json": str(folder / "tokenizer.json"),
        "vocab": str(folder / "vocab.json"),
        "merges": str(folder / "merges.txt"),
    }


def write_gemma_json(path: Path) -> str:
    tok = train_bytelevel_bpe()
    # Gemma's special tokens (ids differ from the real 0/1/2/106/107: the chat format looks them up).
    tok = _with_added(
        tok, [(t, True) for t in ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]]
    )
    tok.save(str(path))
    return str(path)


def write_phi3_json(path: Path, sp_model: str) -> str:
    """Phi-3-style tokenizer.json: the SentencePiece model converted as transformers does, plus chat tokens."""
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer

    kwargs = LlamaTokenizer.convert_to_native_format(vocab_file=sp_model, legacy=True)
    tok = LlamaTokenizer(**kwargs).backend_tokenizer
    extra = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|system|>", "<|end|>", "<|user|>"]
    # Phi-3's chat tokens are special and strip the whitespace to their right, as in its tokenizer.json.
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, rstrip=(t != "<|endoftext|>")) for t in extra]
    )
    tok.save(str(path))
    return str(path)


def write_tiktoken_ranks(path: Path) -> str:
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
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)
