"""Text <-> ids engines: SentencePiece, tiktoken, HF ``tokenizers``.

Each backend encodes text *with* its special tokens recognised (as HF's tokenizer of the same
files does) and returns, for every token, the character offset where it starts. The chat code
uses the offsets to say which message each token belongs to, so a conversation is tokenized as
one string (exactly as ``apply_chat_template`` does) and still gets a per-message loss mask.

Heavy libraries are imported inside the constructors, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from tuner.errors import DataError


def _check_file(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{what} file not found: {path}", "check the tokenizer path in the config")
    return path


class _SpecialSplitter:
    """Split text around occurrences of special-token strings (longest match first)."""

    def __init__(self, specials: Mapping[str, int]) -> None:
        self.specials = dict(specials)
        names = sorted(self.specials, key=len, reverse=True)
        self._re = re.compile("|".join(re.escape(n) for n in names)) if names else None

    def split(self, text: str) -> list[tuple[int, int, Optional[int]]]:
        """[(start, end, special_id or None)] covering text."""
        out: list[tuple[int, int, Optional[int]]] = []
        pos = 0
        if self._re is not None:
            for m in self._re.finditer(text):
                if m.start() > pos:
                    out.append((pos, m.start(), None))
                out.append((m.start(), m.end(), self.specials[m.group(0)]))
                pos = m.end()
        if pos < len(text):
            out.append((pos, len(text), None))
        return out

    def encode(
        self, text: str, encode_segment: Callable[[str], tuple[list[int], list[int]]]
    ) -> tuple[list[int], list[int]]:
        """Ids of text and the character offset where each starts: a special token is its id, the
        text between specials goes through ``encode_segment`` (ids, offsets within the segment)."""
        ids: list[int] = []
        starts: list[int] = []
        for start, end, special in self.split(text):
            if special is not None:
                ids.append(special)
                starts.append(start)
                continue
            seg_ids, seg_starts = encode_segment(text[start:end])
            ids.extend(seg_ids)
            starts.extend(start + o for o in seg_starts)
        return ids, starts


# Characters whose encoding tells whether a SentencePiece vocabulary spells out whitespace.
WHITESPACE_CHARS = (" ", "\n", "\t", "\r", "\v")


class SentencePieceBackend:
    """A SentencePiece ``tokenizer.model`` (Llama 2, Mistral, Gemma's .model).

    Control and unknown pieces (``<s>``, ``</s>``, ``<unk>``, Mistral v3's ``[INST]``, ...) are
    recognised in text as special tokens; the text between them is encoded by SentencePiece
    piece by piece, each with SentencePiece's own dummy-prefix handling (Meta's semantics, equal
    to HF's ``legacy=True`` Llama tokenizer).

    It is also torchtune's ``SentencePieceBaseTokenizer`` (that name is exported by
    ``tuner.modules.transforms.tokenizers``): ``encode(text, add_bos, add_eos,
    trim_leading_whitespace, prefix)``, ``decode``, ``bos_id``, ``eos_id``, ``pad_id`` (the model's
    own, -1 when it has none), ``vocab_size``, ``encodes_whitespace``, ``spm_model``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = _check_file(path, "SentencePiece model")
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=path)
        except (RuntimeError, OSError) as e:
            raise DataError(
                f"cannot read {path} as a SentencePiece model ({e})", "give the tokenizer.model of the model"
            ) from None
        self.path = path
        n = self.sp.get_piece_size()
        self.special_tokens = {
            self.sp.id_to_piece(i): i for i in range(n) if self.sp.is_control(i) or self.sp.is_unknown(i)
        }
        self._splitter = _SpecialSplitter(self.special_tokens)
        self.bos_id, self.eos_id, self.pad_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()
        self.encodes_whitespace = any(self.sp.encode(c) for c in WHITESPACE_CHARS)

    @property
    def spm_model(self):
        """The ``SentencePieceProcessor`` (torchtune's attribute name)."""
        return self.sp

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
        prefix: Optional[str] = None,
    ) -> list[int]:
        """Text -> ids (special-token strings recognised), with the model's BOS/EOS if asked.

        ``trim_leading_whitespace``: encode ``text`` as the continuation of earlier text, without
        the space SentencePiece puts before the first piece (when the vocabulary spells out
        whitespace): ``prefix`` (default newline) is encoded in front and its pieces dropped.
        """
        ids, _ = self.encode_with_offsets(text, trim_leading_whitespace=trim_leading_whitespace, prefix=prefix)
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def token_to_id(self, token: str) -> Optional[int]:
        i = self.sp.piece_to_id(token)
        return None if (i == self.sp.unk_id() and token != self.sp.id_to_piece(i)) else i

    def special_ids(self) -> set[int]:
        return set(self.special_tokens.values())

    def encode_with_offsets(
        self, text: str, trim_leading_whitespace: bool = False, prefix: Optional[str] = None
    ) -> tuple[list[int], list[int]]:
        if not (trim_leading_whitespace and self.encodes_whitespace):
            return self._splitter.encode(text, self._encode_segment)
        prefix = prefix or "\n"
        n_prefix = len(self.sp.encode(prefix))
        ids, starts = self._splitter.encode(prefix + text, self._encode_segment)
        return ids[n_prefix:], [max(s - len(prefix), 0) for s in starts[n_prefix:]]

    def _encode_segment(self, seg: str) -> tuple[list[int], list[int]]:
        """SentencePiece ids of seg and the character offset (in seg) where each piece starts.

        Offsets come from the pieces themselves when the model's normalizer only escapes spaces
        (Llama 2, Mistral, Gemma: identity normalization); otherwise from SentencePiece's proto
        output (which needs the protobuf package).
        """
        seg_ids = self.sp.encode(seg)
        pieces = [self.sp.id_to_piece(i) for i in seg_ids]
        chunks = []
        for i, p in zip(seg_ids, pieces):
            if self.sp.is_byte(i):
                chunks.append(bytes([int(p[3:5], 16)]))
            else:
                chunks.append(p.replace("\u2581", " ").encode("utf-8"))
        raw = seg.encode("utf-8")
        joined = b"".join(chunks)
        prefix = len(joined) - len(raw)
        if prefix in (0, 1) and joined[prefix:] == raw and (prefix == 0 or joined[:1] == b" "):
            byte_to_char = _byte_to_char_map(seg)
            starts, pos = [], -prefix
            for c in chunks:
                starts.append(byte_to_char[max(pos, 0)])
                pos += len(c)
            return seg_ids, starts
        proto = self.sp.encode(seg, out_type="proto")  # non-trivial normalization: ask SentencePiece
        byte_to_char = _byte_to_char_map(seg)
        return [p.id for p in proto.pieces], [byte_to_char[min(p.begin, len(byte_to_char) - 1)] for p in proto.pieces]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            return self.sp.decode([i for i in ids if i not in self.special_ids()])
        # Keep specials as their text; decode the runs between them.
        out, run = [], []
        specials = self.special_ids()
        for i in ids:
            if i in specials:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                out.append(self.sp.id_to_piece(i))
            else:
                run.append(i)
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)


def _byte_to_char_map(s: str) -> list[int]:
    """Index: byte offset in s.encode('utf-8') (plus one past the end) -> character index."""
    m: list[int] = []
    for ci, ch in enumerate(s):
        m.extend([ci] * len(ch.encode("utf-8")))
    m.append(len(s))
    return m


class TikTokenBackend:
    """A tiktoken ranks file (Meta's Llama 3 ``tokenizer.model``: base64 token + rank per line).

    ``special_tokens``: name -> id, or a function of the number of base tokens returning it
    (special tokens follow the base ranks); ``pattern`` is the pre-tokenizer regex.

    It is also torchtune's ``TikTokenBaseTokenizer(path, name, pattern, bos_id, eos_id,
    special_tokens)``: ``encode(text, add_bos, add_eos)`` (special-token strings recognised, as in
    HF), ``decode(ids, truncate_at_eos, skip_special_tokens)``, ``base_vocab_size``, ``vocab_size``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        pattern: str,
        bos_id: Optional[int] = None,
        eos_id: Optional[int] = None,
        special_tokens=None,
    ) -> None:
        path = _check_file(path, "tiktoken ranks")
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        try:
            ranks = load_tiktoken_bpe(path)
        except Exception as e:  # malformed line, not base64, binary file, ...
            raise DataError(
                f"cannot read {path} as a tiktoken ranks file ({type(e).__name__})",
                "Llama 3 needs Meta's original tokenizer.model (lines of '<base64 token> <rank>')",
            ) from None
        self.path = path
        self.num_base_tokens = len(ranks)
        if callable(special_tokens):
            special_tokens = special_tokens(self.num_base_tokens)
        self.special_tokens = dict(special_tokens)
        self.enc = tiktoken.Encoding(
            name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self._splitter = _SpecialSplitter(self.special_tokens)
        self._id_to_special = {v: k for k, v in self.special_tokens.items()}
        self.bos_id, self.eos_id = bos_id, eos_id

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    @property
    def base_vocab_size(self) -> int:
        """Number of ranks in the file (the ids below the special tokens)."""
        return self.num_base_tokens

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Text -> ids (special-token strings recognised), with BOS/EOS if asked and known."""
        ids, _ = self.encode_with_offsets(text)
        bos = [self.bos_id] if add_bos and self.bos_id is not None else []
        eos = [self.eos_id] if add_eos and self.eos_id is not None else []
        return bos + ids + eos

    def token_to_id(self, token: str) -> Optional[int]:
        if token in self.special_tokens:
            return self.special_tokens[token]
        try:
            return self.enc.encode_single_token(token.encode("utf-8"))
        except KeyError:
            return None

    def special_ids(self) -> set[int]:
        return set(self.special_tokens.values())

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        return self._splitter.encode(text, self._encode_segment)

    def _encode_segment(self, seg: str) -> tuple[list[int], list[int]]:
        seg_ids = self.enc.encode_ordinary(seg)
        _, offs = self.enc.decode_with_offsets(seg_ids)
        return seg_ids, offs

    def decode(self, ids: Sequence[int], truncate_at_eos: bool = True, skip_special_tokens: bool = True) -> str:
        """Ids -> text; stops at ``eos_id`` when it is set and ``truncate_at_eos``."""
        ids = [int(i) for i in ids]
        if truncate_at_eos and self.eos_id is not None and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._id_to_special]
        return self.enc.decode(ids)


class HFBackend:
    """A HF ``tokenizer.json`` through the ``tokenizers`` library (the engine transformers uses).

    Encoding passes the whole string to ``Tokenizer.encode(add_special_tokens=False)``, as
    ``apply_chat_template`` does, so added tokens, normalizers and pre-tokenizers behave exactly
    as in transformers.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        path = _check_file(p, "tokenizer.json")
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(path)
        except Exception as e:
            raise DataError(
                f"cannot read {path} as a HF tokenizer.json ({e})", "give the model's tokenizer.json or its folder"
            ) from None
        self.path = path
        self._init_specials()

    @classmethod
    def from_tokenizer(cls, tok, path: str = "<memory>") -> "HFBackend":
        self = cls.__new__(cls)
        self.tok = tok
        self.path = path
        self._init_specials()
        return self

    def _init_specials(self) -> None:
        added = self.tok.get_added_tokens_decoder()
        self.special_tokens = {t.content: i for i, t in added.items() if t.special}

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> Optional[int]:
        return self.tok.token_to_id(token)

    def special_ids(self) -> set[int]:
        return set(self.special_tokens.values())

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        enc = self.tok.encode(text, add_special_tokens=False)
        return list(enc.ids), [o[0] for o in enc.offsets]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


class HuggingFaceBaseTokenizer(HFBackend):
    """torchtune's ``HuggingFaceBaseTokenizer``: a ``tokenizer.json`` whose BOS and EOS come from the
    model's ``tokenizer_config.json`` and/or ``generation_config.json`` (at least one is needed).

    ``encode(text, add_bos=True, add_eos=True)`` runs the tokenizer's post-processor and adds BOS /
    EOS only where it does not already (``hf_adds_bos`` / ``hf_adds_eos``); ``tokenizer`` is the
    ``tokenizers.Tokenizer``.
    """

    def __init__(
        self,
        tokenizer_json_path: str | os.PathLike,
        *,
        tokenizer_config_json_path: Optional[str | os.PathLike] = None,
        generation_config_path: Optional[str | os.PathLike] = None,
    ) -> None:
        super().__init__(tokenizer_json_path)
        if not (tokenizer_config_json_path or generation_config_path):
            raise DataError(
                "At least one of tokenizer_config_json_path or generation_config_path must be specified",
                "pass the model's tokenizer_config.json and/or generation_config.json",
            )
        self.config = _read_json(tokenizer_config_json_path) if tokenizer_config_json_path else None
        self.generation_config = _read_json(generation_config_path) if generation_config_path else None
        self.bos_id, self.eos_id = self._bos_eos_ids()
        self._infer_should_add_bos_eos()

    @property
    def tokenizer(self):
        return self.tok

    def _bos_eos_ids(self) -> tuple[int, int]:
        ids = {}
        for key in ("bos", "eos"):
            token = (self.config or {}).get(f"{key}_token")
            if isinstance(token, Mapping):
                token = token.get("content")
            ids[key] = self.tok.token_to_id(token) if isinstance(token, str) else None
            if ids[key] is None and self.generation_config:
                ids[key] = self.generation_config.get(f"{key}_token_id")
        if ids["bos"] is None or ids["eos"] is None:
            raise DataError(
                "Could not infer BOS and EOS token IDs from config",
                "give a tokenizer_config.json with bos_token/eos_token or a generation_config.json with their ids",
            )
        return ids["bos"], ids["eos"]

    def _infer_should_add_bos_eos(self) -> None:
        """Whether the tokenizer's post-processor already adds BOS / EOS (what it does to "")."""
        empty = self.tok.encode("").ids
        self.hf_adds_bos, self.hf_adds_eos = self.bos_id in empty, self.eos_id in empty

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        ids = list(self.tok.encode(text).ids)
        if self.hf_adds_bos and not add_bos and ids[:1] == [self.bos_id]:
            ids = ids[1:]
        if self.hf_adds_eos and not add_eos and ids[-1:] == [self.eos_id]:
            ids = ids[:-1]
        if add_bos and not self.hf_adds_bos:
            ids.insert(0, self.bos_id)
        if add_eos and not self.hf_adds_eos:
            ids.append(self.eos_id)
        return ids


def _read_json(path: str | os.PathLike) -> dict:
    path = _check_file(path, "tokenizer config")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e})", "give the model's config file") from None


def load_backend(path: str | os.PathLike):
    """tokenizer.json or a folder holding one -> HFBackend; a ``.model`` file -> SentencePieceBackend."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".json":
        return HFBackend(p)
    if not p.exists():
        raise DataError(f"tokenizer file not found: {p}", "check the tokenizer path in the config")
    return SentencePieceBackend(p)


def parse_hf_tokenizer_json(tokenizer_json_path: str | os.PathLike) -> dict[str, int]:
    """The added tokens of a HF ``tokenizer.json``, content -> id (torchtune's helper)."""
    return {t["content"]: t["id"] for t in _read_json(tokenizer_json_path).get("added_tokens", [])}


def iter_required(backend, names: Iterable[str], family: str) -> dict[str, int]:
    """Look up special tokens a family's chat format needs; a clear error names the missing ones."""
    found, missing = {}, []
    for n in names:
        i = backend.token_to_id(n)
        (missing.append(n) if i is None else found.__setitem__(n, i))
    if missing:
        raise DataError(
            f"{backend.path} lacks the {family} special token(s) {missing}",
            f"give the {family} tokenizer files (tokenizer.json with its added tokens)",
        )
    return found
