"""Autoregressive decoding with a ``TransformerDecoder``, with or without its KV cache: choosing the
next token from logits (greedy, temperature, top-k, top-p) and the ``stream`` / ``generate`` loops.

A model capability, so it lives with the model: training (the before/after sample), generation
and evaluation all decode through it (`tuner.generation` exports these names).
"""

from __future__ import annotations

from typing import Iterator, Sequence

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


def _as_batch(
    prompt_tokens: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """``[b, s]`` ids, whether the input was one prompt, and each row's number of left-pad slots
    (None when every prompt has the same length)."""
    first = None if isinstance(prompt_tokens, torch.Tensor) or not len(prompt_tokens) else prompt_tokens[0]
    if isinstance(first, (list, tuple)) or (isinstance(first, torch.Tensor) and first.dim() > 0):
        rows = [torch.as_tensor(p, dtype=torch.long, device=device).reshape(-1) for p in prompt_tokens]
        lengths = [r.numel() for r in rows]
        if min(lengths) == 0:
            raise UsageError(f"prompt {lengths.index(0)} of the batch is empty", "give every prompt at least one token")
        if len(set(lengths)) > 1:
            width = max(lengths)
            tokens = torch.zeros(len(rows), width, dtype=torch.long, device=device)
            for i, r in enumerate(rows):
                tokens[i, width - r.numel() :] = r
            return tokens, False, torch.tensor([width - n for n in lengths], device=device)
        return torch.stack(rows), False, None
    t = torch.as_tensor(prompt_tokens, dtype=torch.long, device=device)
    if t.dim() == 1:
        return t[None], True, None
    if t.dim() != 2:
        raise UsageError(
            f"prompt_tokens must be [s] or [b, s], got shape {tuple(t.shape)}",
            "pass a list of ids, a list of prompts, or a 2-D tensor of equal-length prompts",
        )
    return t, False, None


def padded_mask(pads: torch.Tensor, query_slots: torch.Tensor, kv_len: int) -> torch.Tensor:
    """Attention mask ``[b, q, kv_len]`` of a left-padded batch: a query attends to the earlier slots
    of its own row's prompt, never to padding. A padding query sees only itself (its output is
    never used; a row with nothing to attend to would give NaN that the matmul spreads)."""
    keys = torch.arange(kv_len, device=pads.device)
    causal = keys[None, :] <= query_slots[:, None]  # [q, kv]
    real = keys[None, :] >= pads[:, None]  # [b, kv]
    itself = keys[None, :] == query_slots[:, None]
    return causal[None] & (real[:, None, :] | itself[None])


@torch.inference_mode()
def stream(
    model: torch.nn.Module,
    prompt_tokens: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] | None = None,
    rng: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every sequence, ``[b]``, one step at a time.

    Stops after ``max_new_tokens`` or once every sequence has produced one of ``stop_tokens``
    (the stop token itself is yielded). A batch is a ``[b, s]`` tensor or a list of prompts; prompts
    of different lengths are left-padded, and each row keeps its own positions (0 at its first
    token) and never attends to the padding, so its tokens are those of decoding it alone.
    With ``use_cache`` the model's KV cache is set up for this call (or reset if already set up)
    and removed afterwards if this call created it.
    """
    if max_new_tokens < 0:
        raise UsageError(f"max_new_tokens must be >= 0, got {max_new_tokens}", "ask for 0 or more tokens")
    device = next(model.parameters()).device
    tokens, _, pads = _as_batch(prompt_tokens, device)
    b, s = tokens.shape
    if s == 0:
        raise UsageError("the prompt is empty", "give at least one prompt token (e.g. the BOS id)")
    total = s + max_new_tokens
    if total > model.max_seq_len:
        raise UsageError(
            f"prompt ({s}) + max_new_tokens ({max_new_tokens}) exceeds the model's max_seq_len {model.max_seq_len}",
            "shorten the prompt or ask for fewer tokens",
        )
    stops = torch.tensor(list(stop_tokens or []), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    created_cache = False
    if use_cache:
        if model.caches_are_setup():
            model.reset_caches()
        else:
            dtype = next(model.parameters()).dtype
            model.setup_caches(b, dtype if dtype.is_floating_point else torch.float32, total)
            created_cache = True
    slots = torch.arange(total, device=device)
    positions = None if pads is None else (slots[None] - pads[:, None]).clamp(min=0)  # [b, total]
    try:
        seq = tokens
        step_input, pos = tokens, slots[:s]
        for _ in range(max_new_tokens):
            if pads is None:
                logits = model(step_input, input_pos=pos[None].expand(b, -1)) if use_cache else model(seq)
            elif use_cache:
                mask = padded_mask(pads, pos, model.cache_len())
                logits = model(step_input, mask=mask, input_pos=positions[:, pos], cache_pos=pos)
            else:
                n = seq.shape[1]
                logits = model(seq, mask=padded_mask(pads, slots[:n], n), input_pos=positions[:, :n])
            nxt = sample_next_token(logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p, rng=rng)
            yield nxt
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            if stops.numel():
                done |= torch.isin(nxt, stops)
                if bool(done.all()):
                    break
            step_input, pos = nxt[:, None], pos[-1:] + 1
    finally:
        if created_cache:
            model.remove_caches()


def generate(
    model: torch.nn.Module,
    prompt_tokens: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] | None = None,
    rng: torch.Generator | None = None,
    use_cache: bool = True,
    pad_id: int = 0,
) -> torch.Tensor | list[torch.Tensor]:
    """Prompt followed by the generated tokens: ``[s + n]`` for a 1-D prompt, ``[b, s + n]`` for a batch
    of equal-length prompts, a list of ``[s_i + n]`` for prompts of different lengths.

    ``temperature=0`` is greedy. Generation stops after ``max_new_tokens`` or when every sequence
    has produced a stop token; in a batch, a sequence that stopped early is filled with ``pad_id``
    after its stop token.
    """
    device = next(model.parameters()).device
    tokens, single, pads = _as_batch(prompt_tokens, device)
    stops = torch.tensor(list(stop_tokens or []), dtype=torch.long, device=device)
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=device)
    out = [tokens]
    for nxt in stream(
        model,
        tokens if pads is None else prompt_tokens,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop_tokens=stop_tokens,
        rng=rng,
        use_cache=use_cache,
    ):
        out.append(torch.where(done, torch.full_like(nxt, pad_id), nxt)[:, None])
        if stops.numel():
            done |= torch.isin(nxt, stops)
    result = torch.cat(out, dim=1)
    if pads is not None:
        return [row[int(pad) :] for row, pad in zip(result, pads)]
    return result[0] if single else result
