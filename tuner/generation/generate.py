"""Autoregressive generation with a ``TransformerDecoder``, with or without its KV cache."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from tuner.errors import UsageError
from tuner.generation.sampling import sample_next_token


def _as_batch(prompt_tokens: Sequence[int] | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, bool]:
    t = torch.as_tensor(prompt_tokens, dtype=torch.long, device=device)
    if t.dim() == 1:
        return t[None], True
    if t.dim() != 2:
        raise UsageError(f"prompt_tokens must be [s] or [b, s], got shape {tuple(t.shape)}",
                         "pass a list of ids or a 2-D tensor of equal-length prompts")
    return t, False


@torch.inference_mode()
def stream(
    model: torch.nn.Module,
    prompt_tokens: Sequence[int] | torch.Tensor,
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
    (the stop token itself is yielded). Prompts in a batch must have the same length.
    With ``use_cache`` the model's KV cache is set up for this call (or reset if already set up)
    and removed afterwards if this call created it.
    """
    if max_new_tokens < 0:
        raise UsageError(f"max_new_tokens must be >= 0, got {max_new_tokens}", "ask for 0 or more tokens")
    device = next(model.parameters()).device
    tokens, _ = _as_batch(prompt_tokens, device)
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
    try:
        seq = tokens
        step_input, pos = tokens, torch.arange(s, device=device)
        for _ in range(max_new_tokens):
            if use_cache:
                logits = model(step_input, input_pos=pos[None].expand(b, -1))
            else:
                logits = model(seq)
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
    prompt_tokens: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] | None = None,
    rng: torch.Generator | None = None,
    use_cache: bool = True,
    pad_id: int = 0,
) -> torch.Tensor:
    """Prompt followed by the generated tokens: ``[s + n]`` for a 1-D prompt, ``[b, s + n]`` for a batch.

    ``temperature=0`` is greedy. Generation stops after ``max_new_tokens`` or when every sequence
    has produced a stop token; in a batch, a sequence that stopped early is filled with ``pad_id``
    after its stop token.
    """
    device = next(model.parameters()).device
    tokens, single = _as_batch(prompt_tokens, device)
    stops = torch.tensor(list(stop_tokens or []), dtype=torch.long, device=device)
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=device)
    out = [tokens]
    for nxt in stream(model, tokens, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      stop_tokens=stop_tokens, rng=rng, use_cache=use_cache):
        out.append(torch.where(done, torch.full_like(nxt, pad_id), nxt)[:, None])
        if stops.numel():
            done |= torch.isin(nxt, stops)
    result = torch.cat(out, dim=1)
    return result[0] if single else result
