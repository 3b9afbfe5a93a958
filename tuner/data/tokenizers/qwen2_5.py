"""Qwen2.5 tokenizer: byte-level BPE (tokenizer.json, or vocab.json + merges.txt) with ChatML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import HFBackend
from tuner.data.tokenizers._base import FamilyTokenizer
from tuner.data.tokenizers._chatml import ChatMLFormat, chatml_tokenizer
from tuner.errors import DataError

QWEN2_5_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Qwen2's pre-tokenizer regex (tokenizer.json "Split" pattern).
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501 (the tokenizer's regular expression, verbatim)
# Added tokens after the 151643 base tokens, in id order: (content, special).
QWEN2_5_ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]


def qwen_backend(
    path: str | os.PathLike,
    merges_file: Optional[str | os.PathLike],
    added_tokens: list[tuple[str, bool]] = QWEN2_5_ADDED_TOKENS,
) -> HFBackend:
    """The backend of a Qwen tokenizer: ``path`` is tokenizer.json or its folder, or vocab.json when
    ``merges_file`` is given (then ``added_tokens`` follow the base vocabulary, in id order)."""
    if merges_file is None:
        return HFBackend(Path(path))
    tok = _from_vocab_merges(os.fspath(path), os.fspath(merges_file), added_tokens)
    return HFBackend.from_tokenizer(tok, os.fspath(path))


def _from_vocab_merges(vocab_file: str, merges_file: str, added_tokens: list[tuple[str, bool]]):
    """Build the Qwen2 tokenizer from vocab.json + merges.txt, as transformers' Qwen2Tokenizer does."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    for f, what in ((vocab_file, "vocab.json"), (merges_file, "merges.txt")):
        if not os.path.isfile(f):
            raise DataError(
                f"Qwen {what} not found: {f}",
                "give path=<vocab.json> and merges_file=<merges.txt>, or the tokenizer.json",
            )
    tok = Tokenizer(models.BPE.from_file(vocab_file, merges_file, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for content, special in added_tokens:
        t = AddedToken(content, special=special, normalized=not special)
        (tok.add_special_tokens if special else tok.add_tokens)([t])
    return tok


def qwen2_5_tokenizer(
    path: str,
    merges_file: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template: PromptTemplateLike = None,
    default_system: Optional[str] = QWEN2_5_DEFAULT_SYSTEM,
) -> FamilyTokenizer:
    """Qwen2.5 (Instruct) tokenizer.

    ``path``: tokenizer.json, a folder holding it, or vocab.json when ``merges_file`` is given.
    Chat format: Qwen2.5's ChatML template (default system prompt when none is given; pass
    ``default_system=None`` for the base models' plain ChatML). EOS is ``<|im_end|>``, padding and
    the document separator ``<|endoftext|>``; no BOS.
    """
    return chatml_tokenizer(
        qwen_backend(path, merges_file),
        ChatMLFormat(default_system, qwen_tools=True),
        pad_token="<|endoftext|>",
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name="qwen2_5",
        title="Qwen2.5",
    )
