"""Several adapters in one batch over one unmerged base: each row of the batch uses its own adapter.

`AdapterSwitcher` merges one adapter at a time; serving systems (vLLM, LoRAX, S-LoRA) instead keep
the base unmerged and add each row's low-rank update in the same forward. `MixedAdapters` does that:
for every linear layer some adapter touches it stacks each adapter's factors, padded with zeros to
the layer's largest rank (slot 0 is the base: all zeros),

    A [n + 1, r, in],  B [n + 1, out, r],  and for DoRA a per-output factor g [n + 1, out],

and, while `select` is active, a forward hook on the layer adds the rows' updates with two batched
matmuls over the gathered factors (punica's BGMV):  ``y = g[row] * (W x + B[row] A[row] x) + bias``.
Every variant reduces to that form over a fixed base:

- LoRA / rsLoRA / LoRA-FA / LoRA+ / QLoRA: ``A``, ``s B`` (``s = alpha / r`` or ``alpha / sqrt(r)``);
- DoRA: the same, and ``g = m / ||W + s B A||_row`` (PEFT detaches the norm: a constant per adapter);
- VeRA: ``A = lambda_d * vera_A[:r, :in]``, ``B = lambda_b * vera_B[:out, :r]``;
- PiSSA exported in its converted form (rank 2r over the original base, tuner's default) is LoRA. An
  adapter over PiSSA's residual base (``init_lora_weights: pissa``, or tuner's unconverted factors)
  changes the base itself, so it cannot share one with others: refused with the fix.

A layer an adapter does not touch uses the base for that adapter's rows (its slot is zero). The
rows' choice holds for every forward inside `select`, prefill and each decode step alike.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from tuner.errors import CheckpointError, ConfigError, UsageError, did_you_mean
from tuner.generation.adapters import BASE_NAME, Adapter, check_adapter_fits, lora_settings
from tuner.peft.lora import dora_row_scale, lora_scaling
from tuner.peft.utils import is_adapter_key
from tuner.peft.vera import VERA_PROJECTIONS_NAME

# PEFT initialisations that rewrite the base weights: such an adapter applies over its own base
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


@dataclass
class _Factors:
    """One adapter at one layer: ``delta = b @ a`` (scaling folded into ``b``), DoRA's row factor."""

    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]
    row_scale: Optional[torch.Tensor] = None  # [out]


@dataclass
class _Stack:
    """Every adapter's factors at one layer, slot 0 the base; the row factor only where DoRA is."""

    a: torch.Tensor  # [n + 1, r_max, in]
    b: torch.Tensor  # [n + 1, out, r_max]
    row_scale: Optional[torch.Tensor]  # [n + 1, out] or None


def _refuse_base_changing(adapter: Adapter) -> None:
    init = adapter.config.get("init_lora_weights", True)
    tuner_pissa = any(k.endswith((".pissa_init_a", ".pissa_init_b")) for k in adapter.state)
    if tuner_pissa or (isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS)):
        raise CheckpointError(
            f"adapter {adapter.name!r} ({adapter.path}) applies over a rewritten base "
            f"(init_lora_weights: {init if not tuner_pissa else 'pissa'}), not over the model the other adapters share",
            fix="export it converted to a plain LoRA over the original base (tuner's LoRA runs do by default; in "
            "PEFT save_pretrained(..., path_initial_model_for_weight_conversion=...)), or answer its prompts with "
            "batch_size: 1",
        )


def _check_same_base(model: nn.Module, adapter: Adapter) -> None:
    """PEFT saves the base weight of an adapted lm_head/embedding with the adapter; it must be the model's."""
    params = dict(model.named_parameters())
    for key, value in adapter.state.items():
        if not is_adapter_key(key) and not torch.equal(value.to(params[key].device, params[key].dtype), params[key]):
            raise CheckpointError(
                f"adapter {adapter.name!r} ({adapter.path}) carries its own base weight {key}, which differs from "
                "the model's, so it cannot share the base with other adapters",
                fix="answer its prompts with batch_size: 1 (the adapter is merged alone)",
            )


def _vera_projections(adapter: Adapter) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = (adapter.state.get(f"{VERA_PROJECTIONS_NAME}.vera_{m}") for m in "AB")
    if a is None or b is None:
        raise CheckpointError(
            f"VeRA adapter {adapter.name!r} ({adapter.path}) was saved without its projections",
            fix="save it with save_projection=True (tuner always does)",
        )
    return a, b


def adapter_factors(adapter: Adapter, prefix: str, base_weight: torch.Tensor) -> _Factors:
    """Adapter ``adapter`` at layer ``prefix`` ("layers.0.attn.q_proj.") in float32, as ``delta = B A``
    and DoRA's row factor: the merged weight is ``g * (W + B A)`` (see the module docstring)."""
    state = {k[len(prefix) :]: v.float() for k, v in adapter.state.items() if k.startswith(prefix)}
    if "vera_lambda_d" in state:
        vera_a, vera_b = (t.float() for t in _vera_projections(adapter))
        out_dim, in_dim = base_weight.shape
        lam_d, lam_b = state["vera_lambda_d"], state["vera_lambda_b"]
        r = lam_d.shape[0]
        if vera_a.shape[0] < r or vera_a.shape[1] < in_dim or vera_b.shape[0] < out_dim:
            raise CheckpointError(
                f"VeRA adapter {adapter.name!r} ({adapter.path}): its projections {tuple(vera_a.shape)} / "
                f"{tuple(vera_b.shape)} are too small for {prefix[:-1]} ({in_dim} -> {out_dim}, rank {r})",
                fix="use a VeRA adapter trained on this base model",
            )
        return _Factors(lam_d[:, None] * vera_a[:r, :in_dim], lam_b[:, None] * vera_b[:out_dim, :r])
    rank, alpha, rslora = lora_settings(adapter)
    a, b = state["lora_a.weight"], state["lora_b.weight"]
    if rank is not None and a.shape[0] != rank:
        raise CheckpointError(
            f"adapter {adapter.name!r} ({adapter.path}): {prefix}lora_a has rank {a.shape[0]}, "
            f"its config says r={rank}",
            fix="use the adapter_config.json saved with these weights",
        )
    scaling = lora_scaling(a.shape[0], alpha, rslora)
    magnitude = state.get("magnitude")
    row_scale = None if magnitude is None else dora_row_scale(base_weight.float(), a, b, scaling, magnitude)
    return _Factors(a, scaling * b, row_scale)


def _stack(factors: Sequence[Optional[_Factors]], weight: torch.Tensor) -> _Stack:
    out_dim, in_dim = weight.shape
    r_max = max(f.a.shape[0] for f in factors if f is not None)
    n = len(factors) + 1
    a = torch.zeros(n, r_max, in_dim)
    b = torch.zeros(n, out_dim, r_max)
    dora = any(f is not None and f.row_scale is not None for f in factors)
    row_scale = torch.ones(n, out_dim) if dora else None
    for slot, f in enumerate(factors, start=1):
        if f is None:
            continue
        r = f.a.shape[0]
        a[slot, :r], b[slot, :, :r] = f.a, f.b
        if f.row_scale is not None:
            row_scale[slot] = f.row_scale
    like = dict(device=weight.device, dtype=weight.dtype)
    return _Stack(a.to(**like), b.to(**like), None if row_scale is None else row_scale.to(**like))


class MixedAdapters:
    """Adapters ``{name: Adapter}`` over ``model``'s unmerged base, chosen per row of a batch.

    ``model`` must hold the base weights (no adapter merged in: `InferenceModel.mixed_adapters`
    switches its `AdapterSwitcher` to the base first). Use::

        mixed = MixedAdapters(model, adapters)
        with mixed.select(["math", None, "chat", "base"]):   # one name per row; None / "base": no adapter
            logits = model(tokens)                           # or generate(model, prompts, ...)
    """

    def __init__(self, model: nn.Module, adapters: Mapping[str, Adapter]) -> None:
        if BASE_NAME in adapters:
            raise ConfigError(f"an adapter may not be named {BASE_NAME!r} (it selects the base model)", fix="rename it")
        if not adapters:
            raise UsageError("MixedAdapters needs at least one adapter", fix="pass {name: load_adapter(folder, ...)}")
        self.model = model
        self.adapters = dict(adapters)
        for adapter in self.adapters.values():
            check_adapter_fits(model, adapter)
            _refuse_base_changing(adapter)
            _check_same_base(model, adapter)
        params, modules = dict(model.named_parameters()), dict(model.named_modules())
        self._stacks: dict[nn.Module, _Stack] = {}
        for prefix in sorted({p for a in self.adapters.values() for p in a.modules}):
            weight = params[prefix + "weight"].detach()
            factors = [
                adapter_factors(a, prefix, weight) if prefix in a.modules else None for a in self.adapters.values()
            ]
            self._stacks[modules[prefix[:-1]]] = _stack(factors, weight)
        self._rows: Optional[torch.Tensor] = None

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    def slots(self, names: Sequence[Optional[str]]) -> torch.Tensor:
        """Each row's slot in the stacks (0: the base) for adapter ``names`` (None / "base": no adapter)."""
        index = {name: i for i, name in enumerate(self.adapters, start=1)}
        out = []
        for name in names:
            if name in (None, BASE_NAME):
                out.append(0)
            elif name in index:
                out.append(index[name])
            else:
                raise ConfigError(
                    f"unknown adapter {name!r}; loaded adapters: {', '.join(self.adapters)}"
                    + did_you_mean(str(name), list(self.adapters)),
                    fix=f"use one of the names under adapters: (or {BASE_NAME!r} for the base model)",
                )
        device = next(iter(self._stacks.values())).a.device
        return torch.tensor(out, dtype=torch.long, device=device)

    @contextlib.contextmanager
    def select(self, names: Sequence[Optional[str]]) -> Iterator[None]:
        """Within the block, row ``i`` of every batch the model runs uses adapter ``names[i]``."""
        if self._rows is not None:
            raise UsageError("MixedAdapters.select is already active", fix="leave the outer `with` block first")
        rows = self.slots(names)
        handles = [m.register_forward_hook(functools.partial(self._add_update, s)) for m, s in self._stacks.items()]
        self._rows = rows
        try:
            yield
        finally:
            self._rows = None
            for handle in handles:
                handle.remove()

    def _add_update(self, stack: _Stack, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        rows = self._rows
        x = args[0]
        if x.shape[0] != rows.shape[0]:
            raise UsageError(
                f"the batch has {x.shape[0]} rows but {rows.shape[0]} adapter names were selected",
                fix="give one adapter name per prompt",
            )
        h = x.reshape(x.shape[0], -1, x.shape[-1]).to(stack.a.dtype)
        delta = torch.bmm(torch.bmm(h, stack.a[rows].transpose(1, 2)), stack.b[rows].transpose(1, 2))
        delta = delta.view(output.shape).to(output.dtype)
        if stack.row_scale is None:
            return output + delta
        scale = stack.row_scale[rows].view(rows.shape[0], *([1] * (output.dim() - 2)), -1).to(output.dtype)
        bias = getattr(module, "bias", None)
        if bias is None:
            return scale * (output + delta)
        return scale * (output - bias + delta) + bias
