"""Tokenizer interfaces and the family tokenizer: a backend (text <-> ids) plus a chat format.

``FamilyTokenizer.tokenize_messages`` renders a conversation into text pieces (the chat format,
written in Python after the family's HF chat template, or Mistral's own reference), tokenizes the
joined text in one go exactly as ``apply_chat_template(tokenize=True)`` would, and derives the loss
mask from which message each token starts in. Interface (docs/internals.md): ``encode``,
``decode``, ``tokenize_messages``, ``bos_id``, ``eos_id``, ``pad_id``, ``stop_tokens``,
``max_seq_len``; calling the tokenizer on a sample ``{"messages": [...]}`` adds ``tokens`` and
``mask`` (the dataset's model transform).

A family tokenizer without a chat format (Llama 2 or Mistral with ``prompt_template: null`` or a
template of another kind) tokenizes as torchtune does: each message on its own, BOS at the start
of a turn and EOS after each assistant message (`tokenize_messages_no_special_tokens`).

`BaseTokenizer` and `ModelTokenizer` are torchtune's protocols of the same names: what a
tokenizer written for torchtune (a subclass of them) provides.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

from tuner.data.messages import Message, to_messages, validate_messages
from tuner.data.prompt_templates import PromptTemplateLike, resolve_prompt_template
from tuner.data.tokenizers._backends import SentencePieceBackend
from tuner.data.utils import truncate

# (text, masked): one piece of a rendered conversation. masked=True leaves its tokens out of the loss.
Piece = tuple[str, bool]
ChatFormat = Callable[..., list[Piece]]


def split_system(messages: Sequence[Message]) -> tuple[Optional[str], list[Message]]:
    """(the leading system turn's text or None, the other turns): for templates with no system role,
    which put the system prompt in front of a user turn."""
    msgs = list(messages)
    return (msgs.pop(0).text_content if msgs and msgs[0].role == "system" else None), msgs


class BaseTokenizer(Protocol):
    """Text <-> ids: ``encode(text, **kwargs) -> list[int]``, ``decode(ids, **kwargs) -> str``."""

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, token_ids: list[int], **kwargs: Any) -> str: ...


class ModelTokenizer(Protocol):
    """A model's tokenizer: ``special_tokens``, ``max_seq_len`` and
    ``tokenize_messages(messages, **kwargs) -> (tokens, mask)`` (mask True = not trained on)."""

    special_tokens: dict[str, int]
    max_seq_len: Optional[int]

    def tokenize_messages(self, messages: list[Message], **kwargs: Any) -> tuple[list[int], list[bool]]: ...


def tokenize_messages_no_special_tokens(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    bos_id: Optional[int] = None,
    eos_id: Optional[int] = None,
) -> tuple[list[int], list[bool]]:
    """Tokenize messages one at a time and concatenate them, torchtune's way.

    BOS (if given) starts each turn, EOS (if given) follows each assistant message; each text part
    is encoded on its own (trailing spaces dropped), continuing the previous text without a leading
    space where the tokenizer's ``encode`` supports ``trim_leading_whitespace``. Truncated to
    ``tokenizer.max_seq_len`` keeping EOS last. Each token takes its message's ``masked`` flag.
    """
    start_of_turn, prev_ends_with_space = True, False
    max_seq_len = tokenizer.max_seq_len
    tokens: list[int] = []
    mask: list[bool] = []
    message = None
    for message in messages:
        end_of_turn = message.role == "assistant"
        if start_of_turn and bos_id is not None:
            tokens.append(bos_id)
            mask.append(message.masked)
        trim = not start_of_turn and not prev_ends_with_space
        ids: list[int] = []
        for part in message.content:
            ids += tokenizer.encode(
                part["content"].rstrip(" "), add_bos=False, add_eos=False, trim_leading_whitespace=trim
            )
        if message.content:
            prev_ends_with_space = message.content[-1]["content"].endswith(" ")
        tokens += ids
        mask += [message.masked] * len(ids)
        if end_of_turn and eos_id is not None:
            tokens.append(eos_id)
            mask.append(message.masked)
        start_of_turn = end_of_turn
        if max_seq_len is not None and len(tokens) >= max_seq_len:
            break
    if max_seq_len is not None and message is not None:
        tokens = truncate(tokens, max_seq_len, eos_id)
        mask = truncate(mask, max_seq_len, message.masked if eos_id is not None else None)
    return tokens, mask


class FamilyTokenizer(ModelTokenizer):
    """Tokenizer of one model family.

    ``bos_id``/``eos_id``/``pad_id`` follow the family's HF tokenizer (``bos_id`` is None where the
    family has no BOS, as Qwen2.5 and SmolLM2-Instruct); ``stop_tokens`` are the ids generation
    stops at (EOS and the end-of-turn token); ``max_seq_len`` truncates ``tokenize_messages``.
    ``chat_format`` None tokenizes messages torchtune's plain way (module docstring).
    """

    def __init__(
        self,
        backend: Any,
        chat_format: Optional[ChatFormat],
        *,
        bos_id: Optional[int],
        eos_id: int,
        pad_id: int,
        stop_tokens: Sequence[int],
        max_seq_len: Optional[int] = None,
        prompt_template: PromptTemplateLike = None,
        name: str = "",
    ) -> None:
        self.backend = backend
        self.chat_format = chat_format
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.stop_tokens = list(dict.fromkeys(stop_tokens))
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)
        self.name = name

    # -- plain text -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self.backend.special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self.backend.token_to_id(token)

    def encode(
        self, text: str, add_bos: bool = True, add_eos: bool = True, trim_leading_whitespace: bool = False
    ) -> list[int]:
        """Text -> ids, special-token strings recognised (as HF does); BOS/EOS added if asked.

        ``add_bos`` is a no-op for families without a BOS token. ``trim_leading_whitespace``
        encodes the text as a continuation (no leading space; SentencePiece vocabularies only).
        """
        if trim_leading_whitespace and isinstance(self.backend, SentencePieceBackend):
            ids, _ = self.backend.encode_with_offsets(text, trim_leading_whitespace=True)
        else:
            ids, _ = self.backend.encode_with_offsets(text)
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        if add_eos:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # -- conversations ----------------------------------------------------------------------
    def render(
        self, messages: Sequence[Any], add_end_tokens: bool = True, add_generation_prompt: bool = False
    ) -> list[Piece]:
        """The conversation as text pieces, before tokenization (what the chat template renders).

        A final assistant message with empty content asks for the generation prompt, as
        ``add_generation_prompt=True`` does. ``add_end_tokens=False`` leaves the last message open
        (no end-of-turn / EOS after it), as HF's ``continue_final_message=True``.
        """
        if self.chat_format is None:
            raise TypeError(f"{self!r} has no chat format to render (prompt_template selects none)")
        msgs = self._templated(messages)
        if len(msgs) > 1 and msgs[-1].role == "assistant" and msgs[-1].text_content == "":
            msgs = msgs[:-1]
            add_generation_prompt = True
        if not add_end_tokens and not add_generation_prompt:
            msgs[-1] = msgs[-1].replace(eot=False)
        return self.chat_format(msgs, add_generation_prompt=add_generation_prompt)

    def _templated(self, messages: Sequence[Any]) -> list[Message]:
        msgs = to_messages(messages)
        validate_messages(msgs, min_messages=1, assistant_needs_prompt=False)
        return list(self.prompt_template(msgs)) if self.prompt_template is not None else msgs

    def tokenize_messages(
        self,
        messages: Sequence[Any],
        *,
        add_start_tokens: bool = True,
        add_end_tokens: bool = True,
        add_eos: Optional[bool] = None,
        add_generation_prompt: bool = False,
    ) -> tuple[list[int], list[bool]]:
        """Messages -> (token ids, mask); mask True = not trained on. Truncated to max_seq_len.

        With a chat format the ids equal those of the family's HF chat template (Mistral: its own
        reference, mistral_common) for the same conversation; each message's tokens (role header,
        content, end-of-turn) take the message's ``masked`` flag; BOS, a default system prompt the
        template inserts, and the generation prompt are masked. A conversation cut at
        ``max_seq_len`` ends with EOS (not trained on) when it had its end tokens, as torchtune's
        tokenizers cut it. ``add_start_tokens=False`` leaves out the leading BOS;
        ``add_end_tokens=False`` (torchtune's ``add_eos=False`` for some families) leaves the last
        message open, for generation.
        """
        if add_eos is not None:
            add_end_tokens = add_eos
        if self.chat_format is None:
            return tokenize_messages_no_special_tokens(
                self,
                self._templated(messages),
                bos_id=self.bos_id if add_start_tokens else None,
                eos_id=self.eos_id if add_end_tokens else None,
            )
        pieces = self.render(messages, add_end_tokens=add_end_tokens, add_generation_prompt=add_generation_prompt)
        tokens, mask = self.encode_pieces(pieces)
        if not add_start_tokens and self.bos_id is not None and tokens[:1] == [self.bos_id]:
            tokens, mask = tokens[1:], mask[1:]
        if self.max_seq_len is not None and len(tokens) > self.max_seq_len:
            tokens, mask = tokens[: self.max_seq_len], mask[: self.max_seq_len]
            if add_end_tokens and not add_generation_prompt:  # cut as torchtune cuts: EOS last, not trained on
                tokens[-1], mask[-1] = self.eos_id, True
        return tokens, mask

    def encode_pieces(self, pieces: Sequence[Piece]) -> tuple[list[int], list[bool]]:
        """Tokenize the joined text once; each token takes the mask of the piece it starts in."""
        pieces = [p for p in pieces if p[0]]
        starts_of_pieces, pos = [], 0
        for text, _ in pieces:
            starts_of_pieces.append(pos)
            pos += len(text)
        ids, starts = self.backend.encode_with_offsets("".join(text for text, _ in pieces))
        mask = [bool(pieces[max(bisect_right(starts_of_pieces, s) - 1, 0)][1]) for s in starts]
        return ids, mask

    def __call__(self, sample: Mapping[str, Any], inference: bool = False) -> dict[str, Any]:
        """Model transform: ``{"messages": [...], ...}`` -> the sample with ``tokens`` and ``mask``."""
        sample = dict(sample)
        messages = sample.pop("messages")
        tokens, mask = self.tokenize_messages(messages, add_end_tokens=not inference)
        sample["tokens"], sample["mask"] = tokens, mask
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name or 'tokenizer'}, vocab_size={self.vocab_size}, "
            f"max_seq_len={self.max_seq_len})"
        )


def sentencepiece_tokenizer(
    path: str,
    chat_format: Optional[ChatFormat],
    *,
    max_seq_len: Optional[int],
    prompt_template: PromptTemplateLike,
    name: str,
) -> FamilyTokenizer:
    """A family tokenizer over a SentencePiece ``tokenizer.model`` whose own ids are the family's.

    BOS and EOS are the model's (``<s>``, ``</s>`` for Llama 2 and Mistral), pad its pad id or 0
    where it has none, and generation stops at EOS.
    """
    backend = SentencePieceBackend(path)
    return FamilyTokenizer(
        backend,
        chat_format,
        bos_id=backend.bos_id,
        eos_id=backend.eos_id,
        pad_id=max(backend.pad_id, 0),
        stop_tokens=[backend.eos_id],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name=name,
    )


def select_chat_format(prompt_template: PromptTemplateLike, own_template: type, chat_format: ChatFormat):
    """For a family whose chat format torchtune expresses as a prompt template (Llama 2, Mistral):
    ``(chat_format, None)`` when ``prompt_template`` is the family's own template (its exact format),
    else ``(None, template)``: no chat format, the template (if any) applied as text."""
    template = resolve_prompt_template(prompt_template)
    if isinstance(template, own_template):
        return chat_format, None
    return None, template
