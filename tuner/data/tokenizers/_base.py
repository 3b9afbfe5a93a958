"""The model tokenizer: a backend (text <-> ids) plus a family's chat format.

``tokenize_messages`` renders a conversation into text pieces (the chat format, written in Python
after the family's HF chat template), tokenizes the joined text in one go exactly as
``apply_chat_template(tokenize=True)`` would, and derives the loss mask from which message each
token starts in. Interface (docs/internals.md): ``encode``, ``decode``, ``tokenize_messages``,
``bos_id``, ``eos_id``, ``pad_id``, ``stop_tokens``, ``max_seq_len``; calling the tokenizer on a
sample ``{"messages": [...]}`` adds ``tokens`` and ``mask`` (the dataset's model transform).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional, Sequence

from tuner.data.messages import to_messages, validate_messages
from tuner.data.prompt_templates import PromptTemplateLike, resolve_prompt_template
from tuner.data.tokenizers._backends import SentencePieceBackend

# (text, masked): one piece of a rendered conversation. masked=True leaves its tokens out of the loss.
Piece = tuple[str, bool]
ChatFormat = Callable[..., list[Piece]]


class ModelTokenizer:
    """Tokenizer of one model family.

    ``bos_id``/``eos_id``/``pad_id`` follow the family's HF tokenizer (``bos_id`` is None where the
    family has no BOS, as Qwen2.5 and SmolLM2-Instruct); ``stop_tokens`` are the ids generation
    stops at (EOS and the end-of-turn token); ``max_seq_len`` truncates ``tokenize_messages``.
    """

    def __init__(
        self,
        backend: Any,
        chat_format: ChatFormat,
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
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
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

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Text -> ids, special-token strings recognised (as HF does); BOS/EOS added if asked.

        ``add_bos`` is a no-op for families without a BOS token.
        """
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
        msgs = to_messages(messages)
        if len(msgs) > 1 and msgs[-1].role == "assistant" and msgs[-1].content == "":
            msgs = msgs[:-1]
            add_generation_prompt = True
        if self.prompt_template is not None:
            msgs = list(self.prompt_template(msgs))
        validate_messages(msgs)
        if not add_end_tokens and not add_generation_prompt:
            msgs[-1] = replace(msgs[-1], eot=False)
        return self.chat_format(msgs, add_generation_prompt=add_generation_prompt)

    def tokenize_messages(
        self, messages: Sequence[Any], add_end_tokens: bool = True, add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Messages -> (token ids, mask); mask True = not trained on. Truncated to max_seq_len.

        The ids equal those of the family's HF chat template for the same conversation. Each
        message's tokens (role header, content, end-of-turn) take the message's ``masked`` flag;
        BOS, a default system prompt the template inserts, and the generation prompt are masked.
        A conversation cut at ``max_seq_len`` ends with EOS (not trained on) when it had its end
        tokens, as torchtune's tokenizers cut it, so the same config gives the same samples.
        """
        pieces = self.render(messages, add_end_tokens=add_end_tokens, add_generation_prompt=add_generation_prompt)
        tokens, mask = self.encode_pieces(pieces)
        if self.max_seq_len is not None and len(tokens) > self.max_seq_len:
            tokens, mask = tokens[: self.max_seq_len], mask[: self.max_seq_len]
            if add_end_tokens and not add_generation_prompt:
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
        return f"{type(self).__name__}({self.name or 'tokenizer'}, vocab_size={self.vocab_size}, max_seq_len={self.max_seq_len})"


def sentencepiece_tokenizer(
    path: str,
    chat_format: ChatFormat,
    *,
    max_seq_len: Optional[int],
    prompt_template: PromptTemplateLike,
    name: str,
) -> ModelTokenizer:
    """A family tokenizer over a SentencePiece ``tokenizer.model`` whose own ids are the family's.

    BOS and EOS are the model's (``<s>``, ``</s>`` for Llama 2 and Mistral), pad its pad id or 0
    where it has none, and generation stops at EOS.
    """
    backend = SentencePieceBackend(path)
    sp = backend.sp
    return ModelTokenizer(
        backend,
        chat_format,
        bos_id=sp.bos_id(),
        eos_id=sp.eos_id(),
        pad_id=max(sp.pad_id(), 0),
        stop_tokens=[sp.eos_id()],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name=name,
    )
