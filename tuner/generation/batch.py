"""Answer several prompts in one batch: prompts of different lengths are left-padded
(`tuner.models.decoding`), and with `MixedAdapters` each prompt uses its own adapter over the one
unmerged base, so one forward per step serves every prompt and every adapter."""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch

from tuner.errors import UsageError
from tuner.generation.adapters import BASE_NAME
from tuner.generation.multi_adapter import MixedAdapters
from tuner.models.decoding import generate


def generate_batch(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    adapters: Optional[MixedAdapters] = None,
    adapter_names: Optional[Sequence[Optional[str]]] = None,
    temperature: float = 0.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    stop_tokens: Optional[Sequence[int]] = None,
    rng: Optional[torch.Generator] = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """The tokens generated after each prompt (a final stop token included), decoding all prompts
    as one batch; prompt ``i`` uses adapter ``adapter_names[i]`` of ``adapters`` (None / "base":
    none). Greedy decoding gives each prompt the tokens it gets alone with its adapter merged."""
    prompts = [list(p) for p in prompts]
    if not prompts:
        return []
    if adapter_names is not None and len(adapter_names) != len(prompts):
        raise UsageError(
            f"{len(prompts)} prompts but {len(adapter_names)} adapter names", fix="give one adapter name per prompt"
        )
    names = list(adapter_names) if adapter_names is not None else [None] * len(prompts)
    if adapters is None and any(n not in (None, BASE_NAME) for n in names):
        raise UsageError(
            f"adapter names {sorted({str(n) for n in names})} were given but no adapters",
            fix="pass adapters=MixedAdapters(model, {name: load_adapter(folder, ...)})",
        )
    stops = set(stop_tokens or [])
    selection = adapters.select(names) if adapters is not None else contextlib.nullcontext()
    with selection:
        rows = generate(model, prompts, max_new_tokens, temperature, top_k, top_p, stop_tokens, rng, use_cache)
    out = []
    for prompt, row in zip(prompts, rows):
        new = row[len(prompt) :].tolist()
        end = next((i + 1 for i, token in enumerate(new) if token in stops), len(new))  # through the stop token
        out.append(new[:end])
    return out
