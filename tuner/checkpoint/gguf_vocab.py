"""A model folder's tokenizer as GGUF metadata: the vocabulary llama.cpp (and transformers) rebuild it from.

Why: a GGUF file carries no ``tokenizer.json``; llama.cpp reads the tokens, their types, the BPE merges
(byte-level "gpt2" vocabularies) or the SentencePiece scores ("llama" vocabularies), the special token
ids and the chat template from metadata. This module reads them from the files an HF model folder has,
as llama.cpp's ``convert_hf_to_gguf.py`` does, with the ``tokenizers`` / ``sentencepiece`` packages
only:

- ``tokenizer.json`` with a byte-level BPE model (Llama 3, Qwen 2.5 / 3, SmolLM2): model "gpt2", the
  merges as they are;
- ``tokenizer.model`` (SentencePiece: Llama 2, Mistral, Gemma 2, Phi-3): model "llama", SentencePiece's
  own scores and piece types;
- ``tokenizer.json`` converted from SentencePiece (a BPE with byte fallback, when no tokenizer.model is
  there): model "llama", each piece scored by the rank of the merge that makes it (what SentencePiece's
  highest-score-first merging needs to follow those merges), the merges written too;
- ``tokenizer_config.json``: the chat template (or ``chat_template.jinja``), BOS / EOS / PAD / UNK and
  whether BOS / EOS are added.

A vocabulary shorter than the model's embedding is padded with ``[PAD<i>]`` unused tokens, as
llama.cpp's converter does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import CheckpointError

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class GGUFVocab:
    """The tokenizer metadata of one GGUF file (``tokenizer.ggml.*`` and ``tokenizer.chat_template``)."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def read_vocab(folder: str | Path, vocab_size: int, tokenizer: Any = None) -> GGUFVocab:
    """The GGUF vocabulary of the tokenizer files in ``folder``, padded to ``vocab_size`` tokens.

    ``tokenizer`` (the family tokenizer, optional) is needed only for a tiktoken ranks file without a
    tokenizer.json (Meta's Llama 3 folders): its special tokens and BOS / EOS are not in the file."""
    folder = Path(folder)
    config = _read_json(folder / "tokenizer_config.json")
    spm_file, json_file = folder / "tokenizer.model", folder / "tokenizer.json"
    if spm_file.is_file() and _is_sentencepiece(spm_file):
        vocab = _sentencepiece_vocab(spm_file, _read_json(json_file))
    elif json_file.is_file():
        vocab = _tokenizer_json_vocab(_read_json(json_file))
    elif spm_file.is_file():
        vocab = _tiktoken_vocab(spm_file, tokenizer)
    else:
        raise CheckpointError(
            f"{folder} has no tokenizer.json or SentencePiece tokenizer.model, which the GGUF file needs",
            fix="put the model's Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) in the "
            "checkpoint folder, or point tokenizer_dir at a folder that has them",
        )
    _pad(vocab, vocab_size)
    _special_tokens(vocab, config, folder)
    return vocab


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}", fix="restore the file from the model's repo") from e


_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/]+=* [0-9]+\r?$")


def _is_sentencepiece(path: Path) -> bool:
    """True for a SentencePiece model; Llama 3's tokenizer.model is a tiktoken ranks file instead
    (lines of "<base64 token> <rank>"), which needs the folder's tokenizer.json."""
    with open(path, "rb") as f:
        first = f.readline(200)
    return not _TIKTOKEN_LINE.match(first.rstrip(b"\n"))


def _tokenizer_json_vocab(data: dict[str, Any]) -> GGUFVocab:
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise CheckpointError(
            f"tokenizer.json has a {model.get('type')!r} model; GGUF export reads BPE tokenizers only",
            fix="export a model whose tokenizer is byte-level BPE or SentencePiece",
        )
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    size = max([*model["vocab"].values(), *added, -1]) + 1
    tokens: list[str | None] = [None] * size
    for text, i in model["vocab"].items():
        tokens[i] = text
    for i, t in added.items():
        tokens[i] = t["content"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if model.get("byte_fallback"):
        return _sentencepiece_from_json(tokens, added, merges, model.get("unk_token"), data)
    types = [NORMAL] * size
    for i, t in added.items():
        types[i] = CONTROL if t.get("special") else USER_DEFINED
    return GGUFVocab("gpt2", _fill_holes(tokens, types), types, merges=merges)


def _sentencepiece_from_json(
    tokens: list[str | None], added: dict[int, dict], merges: list[str], unk: str | None, data: dict[str, Any]
) -> GGUFVocab:
    """SentencePiece pieces out of a converted tokenizer.json: a piece's score is minus the rank of the
    first merge that makes it, so SentencePiece's best-score-first merging follows the merge list."""
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", ""), r)
    types, scores = [], []
    for i, text in enumerate(tokens):
        if i in added:
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif text is not None and text == unk:
            types.append(UNKNOWN)
        elif text is not None and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(BYTE)
        else:
            types.append(NORMAL)
        scores.append(-float(rank[text]) if text in rank else 0.0)
    return GGUFVocab(
        "llama",
        _fill_holes(tokens, types),
        types,
        merges=merges,
        scores=scores,
        add_space_prefix=_adds_space_prefix(data),
    )


def _adds_space_prefix(data: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer.json puts "▁" before the text (Metaspace or Prepend)."""
    text = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")])
    return '"Prepend"' in text or '"prepend_scheme": "first"' in text or '"prepend_scheme": "always"' in text


def _sentencepiece_vocab(path: Path, tokenizer_json: dict[str, Any]) -> GGUFVocab:
    """llama.cpp's SentencePiece path: pieces, scores and types (SentencePiece's piece types are
    llama.cpp's token types) from the model, added tokens from tokenizer.json (special: control)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise CheckpointError(f"{path} is not a readable SentencePiece model: {e}", fix="restore the file") from e
    tokens = [p.piece for p in proto.pieces]
    scores = [float(p.score) for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]
    for t in tokenizer_json.get("added_tokens", []):
        i = t["id"]
        if i >= len(tokens):
            grow = i + 1 - len(tokens)
            tokens += [f"[PAD{j}]" for j in range(len(tokens), i + 1)]
            scores += [-1000.0] * grow
            types += [UNUSED] * grow
        if tokens[i] != t["content"] or types[i] == NORMAL:
            tokens[i], scores[i] = t["content"], -1000.0
            types[i] = CONTROL if t.get("special") else USER_DEFINED
    return GGUFVocab(
        "llama", tokens, types, scores=scores, add_space_prefix=bool(proto.normalizer_spec.add_dummy_prefix)
    )


def _byte_spelling() -> dict[int, str]:
    """Byte-level BPE's printable spelling of each byte (GPT-2's: printable Latin-1 bytes stand for
    themselves, the others for the code points from 256 on, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1)]
    printable += range(ord("\u00ae"), ord("\u00ff") + 1)
    spelling = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in spelling]
    spelling.update({b: chr(256 + i) for i, b in enumerate(others)})
    return spelling


def _tiktoken_vocab(path: Path, tokenizer: Any) -> GGUFVocab:
    """A tiktoken ranks file as a "gpt2" vocabulary: the ranks spelled byte-level, each token's merge
    recovered by running BPE over its bytes with the ranks below its own (the last merge joins two
    parts), the family tokenizer's special tokens as control tokens."""
    backend = getattr(tokenizer, "backend", None)
    specials = getattr(backend, "special_tokens", None)
    if not isinstance(specials, dict):
        raise CheckpointError(
            f"{path} is a tiktoken ranks file and the folder has no tokenizer.json; its special tokens are "
            "not in the file",
            fix="set tokenizer: in the config (e.g. tuner.models.llama3.llama3_tokenizer with this path), or put "
            "the model's Hugging Face tokenizer.json in the folder",
        )
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(path))
    spelling = _byte_spelling()

    def spell(token: bytes) -> str:
        return "".join(spelling[b] for b in token)

    size = max([len(ranks), *(i + 1 for i in specials.values())])
    tokens: list[str | None] = [None] * size
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        tokens[rank] = spell(token)
        if len(token) > 1:
            parts = _bpe_parts(ranks, token, rank)
            if len(parts) != 2:
                raise CheckpointError(f"{path}: token of rank {rank} is not one merge of lower ranks", fix="restore it")
            merges.append(f"{spell(parts[0])} {spell(parts[1])}")
    types = [NORMAL] * size
    for text, i in specials.items():
        tokens[i], types[i] = text, CONTROL
    vocab = GGUFVocab("gpt2", _fill_holes(tokens, types), types, merges=merges)
    for name in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{name}_id", None)
        if token_id is not None:
            vocab.special_ids[name] = int(token_id)
    vocab.add_bos = "bos" in vocab.special_ids
    return vocab


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """``token``'s bytes merged by BPE using only ranks below ``max_rank``."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def _fill_holes(tokens: list[str | None], types: list[int]) -> list[str]:
    out = []
    for i, t in enumerate(tokens):
        if t is None:
            types[i] = UNUSED
        out.append(f"[PAD{i}]" if t is None else t)
    return out


def _pad(vocab: GGUFVocab, vocab_size: int) -> None:
    n = len(vocab.tokens)
    if n > vocab_size:
        raise CheckpointError(
            f"the tokenizer has {n} tokens but the model's embedding only {vocab_size} rows",
            fix="export with the tokenizer the model was trained with",
        )
    vocab.tokens += [f"[PAD{i}]" for i in range(n, vocab_size)]
    vocab.types += [UNUSED] * (vocab_size - n)
    if vocab.scores is not None:
        vocab.scores += [-1000.0] * (vocab_size - n)


def _special_tokens(vocab: GGUFVocab, config: dict[str, Any], folder: Path) -> None:
    """BOS / EOS / UNK / PAD ids, add_bos / add_eos and the chat template from tokenizer_config.json."""
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    for name in ("bos", "eos", "unk", "pad"):  # tokenizer_config.json's names win over a tokenizer's ids
        value = config.get(f"{name}_token")
        text = value.get("content") if isinstance(value, dict) else value
        if text is not None and text in ids:
            vocab.special_ids[name] = ids[text]
    added_by_template = _template_special_tokens(_read_json(folder / "tokenizer.json"))
    for name in ("bos", "eos"):
        if getattr(vocab, f"add_{name}") is not None and f"add_{name}_token" not in config:
            continue  # said by the tokenizer already (tiktoken)
        if f"add_{name}_token" in config:
            adds = bool(config[f"add_{name}_token"])
        elif added_by_template is not None:
            adds = vocab.special_ids.get(name) in added_by_template
        else:  # SentencePiece tokenizers add BOS unless told otherwise (llama.cpp's and HF's default)
            adds = name == "bos" and vocab.model == "llama"
        setattr(vocab, f"add_{name}", adds)
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    vocab.chat_template = template


def _template_special_tokens(data: dict[str, Any]) -> set[int] | None:
    """Ids a tokenizer.json's post-processor puts around a single text (Llama 3 adds BOS that way),
    or None when it has no template post-processor."""
    processors = [data.get("post_processor") or {}]
    processors += processors[0].get("processors") or []
    templates = [p for p in processors if p.get("type") == "TemplateProcessing"]
    if not templates:
        return None
    specials = templates[0].get("special_tokens") or {}
    ids: set[int] = set()
    for piece in templates[0].get("single") or []:
        if "SpecialToken" in piece:
            ids.update(specials.get(piece["SpecialToken"]["id"], {}).get("ids", []))
    return ids
