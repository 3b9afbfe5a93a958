"""`fix_untrained_tokens`: repair the embedding rows a base model never trained, for the tokens the
chat template uses.

Base checkpoints such as Llama 3's leave the rows of tokens that pre-training never saw (for Llama 3:
``<|eot_id|>``, the header tokens, the reserved tokens) at (near) zero. Fine-tuning a chat template
on them gives NaNs or a model that never emits the end-of-turn token. As unsloth's and axolotl's
``fix_untrained_tokens``: a row is untrained when every entry is at most ``UNTRAINED_MAX_ABS``
(unsloth's ``eps``, in absolute value here) and it is set to the mean of the trained rows (computed
in float32). The candidates are the tokens the run's chat format writes (a probe conversation
through the tokenizer) and its BOS, EOS, pad and stop tokens, not the whole vocabulary: reserved
tokens nobody uses stay as they are. An untied output projection's row of each repaired token is
set to the mean of the trained tokens' output rows too (a token never seen as input also has an
untrained output row, zero or not: Llama 3.1's are repeated, not zero).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tuner.errors import ConfigError, note
from tuner.quantization import has_nf4_weight

#: A row whose entries are all at most this in absolute value is untrained (unsloth's eps).
UNTRAINED_MAX_ABS = 1e-16

_TURNS = (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"), ("assistant", "Bye"))
#: A short conversation with every role, to see which ids the chat format writes.
_PROBE = [{"role": role, "content": text} for role, text in _TURNS]


def template_token_ids(tokenizer: Any) -> set[int]:
    """The ids a run's chat format writes (a probe conversation, with and without generation
    prompt) and the tokenizer's BOS, EOS, pad and stop tokens."""
    ids: set[int] = set()
    for name in ("bos_id", "eos_id", "pad_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    ids.update(int(t) for t in getattr(tokenizer, "stop_tokens", None) or [])
    tokens, _ = tokenizer.tokenize_messages(_PROBE)
    ids.update(int(t) for t in tokens)
    prompt, _ = tokenizer.tokenize_messages(_PROBE[:2], add_generation_prompt=True)
    ids.update(int(t) for t in prompt)
    return ids


def untrained_rows(weight: torch.Tensor, eps: float = UNTRAINED_MAX_ABS) -> torch.Tensor:
    """A bool per row of ``weight``: True where every entry is at most ``eps`` in absolute value."""
    return weight.detach().abs().amax(dim=1) <= eps


@torch.no_grad()
def _set_rows_to_trained_mean(weight: torch.Tensor, untrained: torch.Tensor, rows: list[int]) -> None:
    trained = ~untrained
    count = int(trained.sum())
    mean = weight[trained].sum(dim=0, dtype=torch.float32) / count if count else torch.zeros(weight.shape[1])
    weight[rows] = mean.to(weight.dtype).expand(len(rows), -1)


@torch.no_grad()
def repair_untrained_tokens(decoder: nn.Module, tokenizer: Any, eps: float = UNTRAINED_MAX_ABS) -> list[int]:
    """Set the untrained embedding rows (and untied output rows) of the template's tokens to the
    mean of the trained rows; print which tokens; return their ids (sorted)."""
    embedding = decoder.tok_embeddings.weight
    vocab = embedding.shape[0]
    candidates = sorted(i for i in template_token_ids(tokenizer) if 0 <= i < vocab)
    untrained = untrained_rows(embedding, eps)
    rows = [i for i in candidates if bool(untrained[i])]
    if not rows:
        return []
    output = getattr(decoder, "output", None)
    out_weight = output._parameters.get("weight") if output is not None else None  # None when tied
    if output is not None and has_nf4_weight(output):
        raise ConfigError(
            "fix_untrained_tokens cannot repair an output projection stored in NF4 (apply_lora_to_output with "
            "quantize_base)",
            fix="set model.apply_lora_to_output: False, or fix_untrained_tokens: False",
        )
    _set_rows_to_trained_mean(embedding, untrained, rows)
    if out_weight is not None and out_weight is not embedding and out_weight.shape[0] == vocab:
        _set_rows_to_trained_mean(out_weight, untrained, rows)
    names = ", ".join(repr(tokenizer.decode([i], skip_special_tokens=False)) for i in rows[:20])
    more = f" (+{len(rows) - 20} more)" if len(rows) > 20 else ""
    note(
        f"fix_untrained_tokens: {len(rows)} token(s) the chat template uses had untrained embedding rows, set to the "
        f"mean of the trained rows: {names}{more}"
    )
    return rows
