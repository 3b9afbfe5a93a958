"""Delta-LoRA (Zi et al. 2023, arXiv 2309.02411): the frozen base weight follows the adapter's change.

LoRA trains ``A`` and ``B`` with ``W`` frozen. Delta-LoRA also moves ``W``, by the change of the
scaled product over each optimizer step (the paper's Algorithm 1, with ``t`` counting optimizer
steps from 0)::

    if t > K:  W <- W + lambda * s * (B_{t+1} A_{t+1} - B_t A_t)        s = alpha / r (the LoRA scaling)

``lambda`` is the update ratio, ``K`` the number of warm-up steps. ``W`` needs no gradient and no
optimizer state (it stays ``requires_grad=False``), so memory stays LoRA-like; the update is done
under ``no_grad`` after each optimizer step. The product of the previous step is not kept (a
W-sized tensor per layer): this class keeps copies of the previous ``A`` and ``B`` (``r x (in +
out)`` per layer) and adds both products to ``W`` in one ``addmm`` (``[B_{t+1}, B_t] @ [A_{t+1};
-A_t]``), so no W-sized temporary is made either.

In bf16 most of a step's change is smaller than half of W's rounding step (docs/benchmarks.md),
so rounding to nearest would drop it; a bf16 ``W`` is
therefore updated in float32 and rounded stochastically (unbiased: the expected weight is the exact
one), with random bits drawn from a generator seeded by (run seed, step, layer), so a resumed run
draws the same bits. float32 weights are updated exactly, in place.

As in the paper, the adapter branch has no dropout (then the gradient of ``W`` equals that of ``s B
A``, which is what the update stands in for); DoRA's magnitude, VeRA's shared matrices and an NF4
(QLoRA) or FP8 (``base_dtype: fp8``) base do not fit the rule and are refused. Since ``W`` changes,
the trained model is the merged ``W + s B A``: an adapter alone over the original base is not it.

Sharded across ranks (FSDP2 shards every parameter by rows), each rank moves its own rows of ``W``:
``W_local += lambda * s * (B_local A - B_prev,local A_prev)``. ``B`` is sharded by the same rows as
``W`` (both have ``out`` rows), so only ``A`` (``r x in``) is gathered whole, once per layer and step;
the kept copies are the whole previous ``A`` and this rank's rows of the previous ``B``. The
stochastic rounding's random bits are drawn over the whole ``W`` and sliced to the local rows, so
two ranks round every element as one device does. Which rows a rank holds, and gathering ``A``, is
the placement's business: it is handed in as `RowShards` (one device: the whole tensors).
"""

from __future__ import annotations

from typing import Mapping, Protocol

import torch
from torch import nn

from tuner.errors import ConfigError, TrainingError
from tuner.peft.lora import LoRALinear
from tuner.peft.vera import VeRALinear


def delta_lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The adapted layers of ``model`` by name, after checking that Delta-LoRA can update them."""
    if any(isinstance(m, VeRALinear) for m in model.modules()):
        raise ConfigError(
            "Delta-LoRA updates the base by the change of the product B A, which VeRA does not train",
            fix="set model.use_vera: False, or delta_lora_update_ratio: null",
        )
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ConfigError(
            "delta_lora_update_ratio is set, but the model has no LoRA layers",
            fix="use a lora_* model builder, or set delta_lora_update_ratio: null",
        )
    for name, module in layers.items():
        refusal = _refusal(module)
        if refusal is not None:
            raise ConfigError(f"Delta-LoRA cannot update {name}: {refusal[0]}", fix=refusal[1])
    if any(isinstance(m.dropout, nn.Dropout) for m in layers.values()):
        p = next(m.dropout.p for m in layers.values() if isinstance(m.dropout, nn.Dropout))
        raise ConfigError(
            f"Delta-LoRA has no dropout on the adapter (the paper drops it so that W's gradient equals that of "
            f"s B A); this model has lora_dropout={p}",
            fix="set model.lora_dropout: 0.0",
        )
    return layers


def _refusal(module: LoRALinear) -> tuple[str, str] | None:
    """Why Delta-LoRA's rule does not fit ``module`` and the fix (None: it fits, dropout aside)."""
    off = ", or set delta_lora_update_ratio: null"
    if module.quantize_base:
        return "QLoRA stores its base in NF4 (quantize_base: True)", "use a lora_* builder" + off
    if getattr(module, "base_dtype", None) is not None:
        return "base_dtype: fp8 stores its base in FP8, far coarser than a step's change", "drop model.base_dtype" + off
    if module.use_dora:
        return "the rule is for plain LoRA; DoRA rescales W + s B A by its magnitude", "set model.use_dora: False" + off
    return None


def round_to_bf16_stochastically(
    x: torch.Tensor, generator: torch.Generator, full_rows: int | None = None, first_row: int = 0
) -> torch.Tensor:
    """float32 ``x`` rounded to bfloat16 up or down at random, with the probabilities that make the
    expected result ``x`` (a uniform 16-bit number is added to the bits bf16 drops, then they are cut).

    ``x`` may be rows ``first_row ..`` of a tensor of ``full_rows`` rows (one rank's shard): the random
    numbers are drawn for the whole tensor and sliced, so each element gets the number it gets unsharded."""
    bits = x.contiguous().view(torch.int32)
    shape = (bits.shape[0] if full_rows is None else full_rows, *bits.shape[1:])
    noise = torch.randint(0, 1 << 16, shape, dtype=torch.int32, device=x.device, generator=generator)
    noise = noise[first_row : first_row + bits.shape[0]]
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


class RowShards(Protocol):
    """How a placement lays a parameter out: this process's rows of it, and the whole of it."""

    def local_rows(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        """This process's rows of ``tensor`` (a tensor it may update in place) and the index of the first."""
        ...

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """The whole ``tensor`` (every process calls it, in the same order)."""
        ...


class WholeTensors:
    """`RowShards` of one process holding every tensor whole."""

    def local_rows(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        return tensor, 0

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class DeltaLoRA:
    """Delta-LoRA's update of the frozen base weights of ``model``'s LoRA layers (module docstring).

    Args:
        model: a model with `LoRALinear` layers (dense base, no dropout, no DoRA).
        update_ratio: the paper's ``lambda``.
        start_step: the paper's ``K``: the base moves after optimizer steps ``t > K`` (``t`` from 0).
        seed: seeds the stochastic rounding of bf16 base weights (with the step and the layer).
        shards: how the parameters are laid out across processes (default: whole, one process).

    Create it once the adapters and base weights hold their starting values (initialised, or loaded
    on resume): those are the "previous" factors of the first step.
    """

    def __init__(
        self,
        model: nn.Module,
        update_ratio: float,
        start_step: int = 0,
        seed: int = 0,
        shards: RowShards | None = None,
    ) -> None:
        self.layers = delta_lora_layers(model)
        self.update_ratio = float(update_ratio)
        self.start_step = int(start_step)
        self.seed = int(seed)
        self.shards: RowShards = shards if shards is not None else WholeTensors()
        self.previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.remember_factors()

    def remember_factors(self) -> None:
        """Take the current ``A`` (whole) and this process's rows of ``B`` as the previous step's."""
        self.previous = {
            name: (
                self.shards.full_tensor(m.lora_a.weight).detach().clone(),
                self.shards.local_rows(m.lora_b.weight)[0].detach().clone(),
            )
            for name, m in self.layers.items()
        }

    @torch.no_grad()
    def after_step(self, step_index: int) -> None:
        """Call after optimizer step ``step_index`` (from 0): move each ``W`` (this process's rows) by
        ``lambda * s * (B A - B_prev A_prev)`` when ``step_index > start_step``; then remember ``A``, ``B``."""
        update = step_index > self.start_step
        for index, (name, module) in enumerate(self.layers.items()):
            a_prev, b_prev = self.previous[name]
            a = self.shards.full_tensor(module.lora_a.weight)
            b, b_row = self.shards.local_rows(module.lora_b.weight)
            if update:
                weight, w_row = self.shards.local_rows(module.weight)
                if (w_row, weight.shape[0]) != (b_row, b.shape[0]):
                    raise TrainingError(
                        f"Delta-LoRA: {name}'s base weight holds rows {w_row}..{w_row + weight.shape[0]} on this "
                        f"process but its lora_b rows {b_row}..{b_row + b.shape[0]}; the update needs the same rows",
                        fix="shard the base weight and lora_b alike (FSDP2 by rows), or set delta_lora_update_ratio: "
                        "null",
                    )
                factor_b, factor_a = torch.cat([b, b_prev], dim=1), torch.cat([a, -a_prev], dim=0)
                alpha = self.update_ratio * module.scaling
                if weight.dtype == torch.bfloat16:
                    exact = torch.addmm(weight.float(), factor_b.float(), factor_a.float(), alpha=alpha)
                    generator = torch.Generator(device=weight.device)
                    generator.manual_seed(self.seed * 1_000_003 + step_index * 10_007 + index)
                    full_rows = module.weight.shape[0]
                    weight.copy_(round_to_bf16_stochastically(exact, generator, full_rows, w_row))
                else:
                    weight.addmm_(factor_b.to(weight.dtype), factor_a.to(weight.dtype), alpha=alpha)
            a_prev.copy_(a)
            b_prev.copy_(b)


@torch.no_grad()
def load_moved_base(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Put back the moved base weights of ``model``'s LoRA layers (``<layer>.weight``, as a resume's
    training state holds them), after checking that they are exactly those layers'."""
    expected = {f"{name}.weight": m for name, m in delta_lora_layers(model).items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            "the checkpoint's Delta-LoRA base weights do not fit this model's LoRA layers "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})",
            fix="resume with the lora_attn_modules / apply_lora_to_mlp / apply_lora_to_output of the run that saved it",
        )
    for key, module in expected.items():
        module.weight.copy_(tensors[key].to(module.weight.device, module.weight.dtype))
