"""Choosing the next token from logits: greedy, temperature, top-k, top-p."""
from __future__ import annotations

import torch

from tuner.errors import UsageError


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids ``[b]`` from last-position logits ``[b, vocab]``.

    ``temperature == 0`` is greedy (argmax; top_k/top_p ignored). Otherwise logits are divided by
    the temperature, restricted to the ``top_k`` best and to the smallest set whose probability
    reaches ``top_p``, and sampled with ``rng``.
    """
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature}", "use 0 for greedy decoding")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top_k must be >= 1, got {top_k}", "use None to disable top-k")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UsageError(f"top_p must be in (0, 1], got {top_p}", "use None to disable top-p")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)
