"""Text in, text out: prompt formatting (plain or through the family's chat format), incremental
decoding for streaming, and one generation with its timing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from tuner.errors import ConfigError, UsageError
from tuner.models.decoding import stream


def prompt_tokens(
    tokenizer: Any,
    prompt: Optional[str] = None,
    *,
    messages: Optional[Sequence[Mapping[str, Any]]] = None,
    system: Optional[str] = None,
    chat_format: bool = True,
) -> list[int]:
    """Token ids of a prompt.

    ``chat_format=True``: ``messages`` (a conversation), or ``prompt`` as one user turn after an
    optional ``system`` message, rendered by the tokenizer's chat format with the generation prompt
    (the assistant header) appended. ``chat_format=False``: ``prompt`` as plain text with BOS.
    """
    if chat_format:
        if messages is None:
            if prompt is None:
                raise ConfigError("no prompt given", fix="set prompt: 'your text' (or messages: [...])")
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": str(prompt)}
            ]
        elif system:
            messages = [{"role": "system", "content": system}, *messages]
        tokens, _ = tokenizer.tokenize_messages([dict(m) for m in messages], add_generation_prompt=True)
        return list(tokens)
    if messages is not None:
        raise ConfigError(
            "messages need the chat format, but chat_format is False",
            fix="set chat_format: True or give a plain prompt",
        )
    if prompt is None:
        raise ConfigError("no prompt given", fix="set prompt: 'your text'")
    return tokenizer.encode(str(prompt), add_bos=True, add_eos=False)


class IncrementalDecoder:
    """Turns generated ids into text pieces as they arrive.

    Decoding token by token breaks multi-byte characters and tokenizers that merge spaces, so the
    whole generated sequence is decoded each time and the new suffix returned; a trailing
    replacement character (an unfinished UTF-8 sequence) waits for the next token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        return self._advance(text)

    def flush(self) -> str:
        return self._advance(self.tokenizer.decode(self.ids))

    def _advance(self, text: str) -> str:
        # normally the old text is a prefix of the new; if a tokenizer re-renders earlier text,
        # only what follows the common prefix is new (printed text cannot be taken back)
        common = 0
        for a, b in zip(self.text, text):
            if a != b:
                break
            common += 1
        piece = text[common:]
        self.text = text
        return piece


@dataclass
class GenerationResult:
    """One generation: the prompt and generated ids (a final stop token included), the text
    (without special tokens), whether it ended at a stop token, and its speed."""

    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    stopped: bool
    seconds: float
    first_token_seconds: float
    adapter: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.tokens)} tokens in {self.seconds:.2f} s ({self.tokens_per_second:.1f} tokens/s; "
            f"first token after {self.first_token_seconds:.2f} s)" + ("" if self.stopped else "; hit max_new_tokens")
        )


def generate_text(
    model: torch.nn.Module,
    tokenizer: Any,
    tokens: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    rng: Optional[torch.Generator] = None,
    stop_tokens: Optional[Sequence[int]] = None,
    on_text: Optional[Callable[[str], None]] = None,
    use_cache: bool = True,
) -> GenerationResult:
    """Generate after ``tokens``, handing each new piece of text to ``on_text`` as it is produced.

    Stops at ``stop_tokens`` (default: the tokenizer's EOS / end-of-turn tokens) or after
    ``max_new_tokens``, clipped to what fits in the model's ``max_seq_len``.
    """
    tokens = list(tokens)
    room = int(getattr(model, "max_seq_len", len(tokens) + max_new_tokens)) - len(tokens)
    if room <= 0:
        raise UsageError(
            f"the prompt has {len(tokens)} tokens, the model's max_seq_len is {model.max_seq_len}",
            fix="shorten the prompt (in a chat: type /reset to clear the history)",
        )
    max_new_tokens = min(int(max_new_tokens), room)
    stops = list(tokenizer.stop_tokens if stop_tokens is None else stop_tokens)
    decoder = IncrementalDecoder(tokenizer)
    out: list[int] = []
    start = time.perf_counter()
    first = 0.0
    stopped = False
    for nxt in stream(
        model,
        tokens,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop_tokens=stops,
        rng=rng,
        use_cache=use_cache,
    ):
        token = int(nxt[0])
        if not out:
            first = time.perf_counter() - start
        out.append(token)
        if token in stops:
            stopped = True
            break
        piece = decoder.push(token)
        if piece and on_text is not None:
            on_text(piece)
    rest = decoder.flush()
    if rest and on_text is not None:
        on_text(rest)
    seconds = time.perf_counter() - start
    return GenerationResult(
        prompt_tokens=tokens, tokens=out, text=decoder.text, stopped=stopped, seconds=seconds, first_token_seconds=first
    )
