"""Loss parity with torchtune: both tools train on the same token batches from the same weights.

``scripts/benchmark.py --compare-torchtune`` writes what both read:

- learnable tokens (`learnable_tokens`): a fixed random Markov chain over up to 4096 ids of the
  vocabulary, each id followed by one of 4 successors with probabilities 0.5 / 0.25 / 0.15 / 0.1.
  A model learns it (the loss falls from ~ln(vocab) towards the chain's entropy, 1.21 nats), so a
  wrong gradient, optimizer step or weight shows as a loss curve that leaves the other tool's; random
  tokens, as the speed figures used before, cannot show that (their loss stays at ln(vocab)).
  The samples are written once (`write_token_file`) and read in order by `token_file_dataset`, a
  dataset component that tuner's and torchtune's recipes both instantiate (``shuffle=False``);
- an HF checkpoint that both load (``benchmarks.torchtune_side.write_hf_checkpoint``);
- tuner's initial adapter weights (`write_adapter_file`), which torchtune's LoRA model loads through
  `torchtune_model_with_adapters`, so that both start from the same ``lora_a`` (a random init).

Both log the mean loss of every step; `loss_parity` compares the two series. The same comparison
between two torchtune runs that differ only in kernels (compile on / off) or in their seed (which,
with data, weights and dropout fixed, changes nothing but non-deterministic kernels) is the noise
bound that tuner's difference is read against.

This module is imported by torchtune's recipe process too: it needs torch and safetensors only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

BRANCH_PROBS = (0.5, 0.25, 0.15, 0.1)  # successors of each id; entropy 1.21 nats
CHAIN_ENTROPY = -sum(p * math.log(p) for p in BRANCH_PROBS)


def learnable_tokens(
    num_samples: int, seq_len: int, vocab_size: int, seed: int = 0, states: int | None = None
) -> torch.Tensor:
    """``[num_samples, seq_len]`` int32 ids < ``vocab_size``: walks of a fixed random Markov chain on
    ``states`` distinct ids (default: one per ~200 tokens of the data, 16 to 4096, so that each id is
    seen about 200 times and a run of any length can learn its successors), each with
    ``len(BRANCH_PROBS)`` successors. Deterministic for a given seed (same tensor on every machine:
    CPU generator, no sampling kernels)."""
    if num_samples < 1 or seq_len < 2 or vocab_size < 2:
        raise ValueError(
            f"need num_samples >= 1, seq_len >= 2, vocab_size >= 2; got {num_samples}, {seq_len}, {vocab_size}"
        )
    if states is None:
        states = max(16, min(4096, num_samples * seq_len // 200))
    g = torch.Generator().manual_seed(seed)
    n = min(states, vocab_size)
    ids = torch.randperm(vocab_size, generator=g)[:n]
    successors = torch.randint(0, n, (n, len(BRANCH_PROBS)), generator=g)
    cumulative = torch.tensor(BRANCH_PROBS, dtype=torch.float64).cumsum(0)
    state = torch.randint(0, n, (num_samples,), generator=g)
    draws = torch.rand(num_samples, seq_len, generator=g, dtype=torch.float64)
    branches = torch.searchsorted(cumulative, draws, right=True).clamp(max=len(BRANCH_PROBS) - 1)
    walk = torch.empty(num_samples, seq_len, dtype=torch.long)
    for t in range(seq_len):
        walk[:, t] = state
        state = successors[state, branches[:, t]]
    return ids[walk].to(torch.int32)


def write_token_file(path: str | Path, tokens: torch.Tensor) -> Path:
    """Save ``tokens`` ([samples, seq_len] ids) as safetensors (``tokens``), for `token_file_dataset`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tokens": tokens.to(torch.int32).contiguous()}, str(path))
    return path


class TokenFileDataset(Dataset):
    """The rows of a token file (or of ``tokens`` [samples, seq_len]), in order: ``{"tokens": ids,
    "labels": ids}`` (every token trained on; labels aligned with tokens, shifted by the loss, as both
    tools' collates expect)."""

    def __init__(self, path: str | Path | None = None, tokens: torch.Tensor | None = None) -> None:
        from safetensors.torch import load_file

        self.tokens = load_file(str(path))["tokens"] if tokens is None else tokens

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        ids = self.tokens[i].tolist()
        return {"tokens": ids, "labels": list(ids)}


def token_file_dataset(tokenizer: Any, path: str, packed: bool = False, **_: Any) -> TokenFileDataset:
    """Dataset component (``dataset._component_=benchmarks.parity.token_file_dataset``) for both tools'
    recipes, which pass their tokenizer first; the ids are already tokens, so it is not used.
    ``packed`` is accepted because both recipes read ``dataset.packed``; packing is refused."""
    if packed:
        raise ValueError("token_file_dataset holds fixed-length samples; packed=True is not supported")
    return TokenFileDataset(path)


def learnable_dataset(
    tokenizer: Any, seq_len: int, num_samples: int, vocab_size: int, *, states: int | None = None, **options: Any
) -> TokenFileDataset:
    """Dataset component: `learnable_tokens` made in memory (no file), for tuner alone on the weights
    its checkpointer gives (``scripts/benchmark.py`` with ``dataset._component_=benchmarks.parity.learnable_dataset``;
    the FP8 quality runs, docs/benchmarks.md). ``states`` as in `learnable_tokens`."""
    if options.get("packed"):
        raise ValueError("learnable_dataset holds fixed-length samples; packed=True is not supported")
    seed = int(options.get("seed", 0))
    return TokenFileDataset(tokens=learnable_tokens(num_samples, seq_len, vocab_size, seed=seed, states=states))


def write_adapter_file(path: str | Path, adapters: dict[str, torch.Tensor]) -> Path:
    """Save adapter tensors (tuner keys, which are torchtune's module paths: ``layers.0.attn.q_proj.lora_a.weight``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in adapters.items()}, str(path))
    return path


def torchtune_model_with_adapters(builder: str, adapter_file: str, **kwargs: Any) -> torch.nn.Module:
    """torchtune's model from ``builder`` (a dotted path, e.g. ``torchtune.models.llama3_2.lora_llama3_2_1b``)
    with ``kwargs``, its adapter weights then set from ``adapter_file``: torchtune's LoRA recipe loads
    the base checkpoint next with ``strict=False``, which leaves them as set. Every adapter weight of
    the model must be in the file and have its shape."""
    import importlib

    from safetensors.torch import load_file

    module_name, _, name = builder.rpartition(".")
    model = getattr(importlib.import_module(module_name), name)(**kwargs)
    adapters = load_file(adapter_file)
    params = dict(model.named_parameters())
    wanted = {k for k in params if ".lora_" in k or k.endswith(".magnitude")}
    if set(adapters) != wanted:
        raise ValueError(
            f"{adapter_file}: adapter keys differ from the model's (missing {sorted(wanted - set(adapters))[:4]}, "
            f"unexpected {sorted(set(adapters) - wanted)[:4]})"
        )
    with torch.no_grad():
        for key, value in adapters.items():
            if params[key].shape != value.shape:
                raise ValueError(
                    f"{adapter_file}: {key} has shape {tuple(value.shape)}, the model's is {tuple(params[key].shape)}"
                )
            params[key].copy_(value)
    return model


def loss_parity(reference: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """How far ``other``'s per-step losses are from ``reference``'s over the steps both logged:
    the largest absolute and relative difference (and the step of the largest absolute one), the
    mean absolute difference, and each series' first and last loss."""
    n = min(len(reference), len(other))
    if n == 0:
        raise ValueError("no step logged by both runs")
    diffs = [abs(a - b) for a, b in zip(reference[:n], other[:n])]
    rel = [d / abs(a) if a else math.inf for d, a in zip(diffs, reference[:n])]
    worst = max(range(n), key=diffs.__getitem__)
    return {
        "steps": n,
        "max_abs_diff": max(diffs),
        "max_rel_diff": max(rel),
        "at_step": worst + 1,
        "mean_abs_diff": sum(diffs) / n,
        "first_loss": [reference[0], other[0]],
        "last_loss": [reference[n - 1], other[n - 1]],
    }


def within_noise(parity: dict[str, Any], noise: Sequence[dict[str, Any]]) -> bool | None:
    """Whether ``parity``'s largest difference is at most the largest of the ``noise`` comparisons
    (None when there is no noise comparison to read it against)."""
    if not noise:
        return None
    return parity["max_abs_diff"] <= max(n["max_abs_diff"] for n in noise)


def side_by_side(series: dict[str, Sequence[float]], fmt: Callable[[float], str] = "{:.5f}".format) -> str:
    """A text table: one row per step, one column per named loss series."""
    names = list(series)
    n = max(len(s) for s in series.values())
    lines = ["step " + " ".join(f"{name:>14}" for name in names)]
    for i in range(n):
        cells = [fmt(series[k][i]) if i < len(series[k]) else "-" for k in names]
        lines.append(f"{i + 1:>4} " + " ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def parity_report(tuner: Sequence[float], torchtune_runs: dict[str, Sequence[float]]) -> dict[str, Any]:
    """tuner's per-step losses against each torchtune run's (``torchtune_runs``: entry name -> losses;
    ``"torchtune"`` is the reference run), and the noise bound: every other torchtune run against the
    reference. ``within_noise`` says whether tuner's largest difference from the reference is inside
    that bound (None without a second torchtune run)."""
    if "torchtune" not in torchtune_runs:
        raise ValueError("parity_report needs the reference run, 'torchtune'")
    reference = torchtune_runs["torchtune"]
    vs = {f"tuner_vs_{name}": loss_parity(losses, tuner) for name, losses in torchtune_runs.items()}
    noise = {
        f"{name}_vs_torchtune": loss_parity(reference, losses)
        for name, losses in torchtune_runs.items()
        if name != "torchtune"
    }
    return {
        **vs,
        "noise": noise,
        "noise_bound_max_abs_diff": max((n["max_abs_diff"] for n in noise.values()), default=None),
        "within_noise": within_noise(vs["tuner_vs_torchtune"], list(noise.values())),
    }


def smoothed(losses: Sequence[float], window: int = 20) -> list[float]:
    """Trailing mean of ``losses`` over up to ``window`` steps (step i: the mean of steps i-window+1..i)."""
    out, total = [], 0.0
    for i, x in enumerate(losses):
        total += x - (losses[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def curve_gap(reference: Sequence[float], other: Sequence[float], window: int = 20, bound: float = 0.01) -> dict:
    """How far ``other``'s loss curve is from ``reference``'s, relative, both smoothed over ``window``
    steps (`smoothed`): the largest ``|other / reference - 1|`` and its step, the steps past ``bound``
    (how many, the last one), and the held-out figure, the mean loss of the last ``window`` steps
    (every batch of the learnable data is new, so those are losses on unseen data) and its relative
    difference. ``within`` says whether both the curve and the final figure stay within ``bound``."""
    n = min(len(reference), len(other))
    if n == 0:
        raise ValueError("no step logged by both runs")
    a, b = smoothed(reference[:n], window), smoothed(other[:n], window)
    rel = [y / x - 1 for x, y in zip(a, b)]
    worst = max(range(n), key=lambda i: abs(rel[i]))
    past = [i + 1 for i in range(n) if abs(rel[i]) > bound]
    tail = min(window, n)
    held = [sum(s[n - tail : n]) / tail for s in (reference, other)]
    final_rel = held[1] / held[0] - 1
    return {
        "steps": n,
        "max_rel": rel[worst],
        "at_step": worst + 1,
        "steps_past_bound": len(past),
        "last_step_past_bound": past[-1] if past else None,
        "held_out": held,
        "held_out_rel": final_rel,
        "within": not past and abs(final_rel) <= bound,
        "bound": bound,
    }
