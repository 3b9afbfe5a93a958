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
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from tuner.errors import ConfigError
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


def round_to_bf16_stochastically(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """float32 ``x`` rounded to bfloat16 up or down at random, with the probabilities that make the
    expected result ``x`` (a uniform 16-bit number is added to the bits bf16 drops, then they are cut)."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=x.device, generator=generator)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


class DeltaLoRA:
    """Delta-LoRA's update of the frozen base weights of ``model``'s LoRA layers (module docstring).

    Args:
        model: a model with `LoRALinear` layers (dense base, no dropout, no DoRA).
        update_ratio: the paper's ``lambda``.
        start_step: the paper's ``K``: the base moves after optimizer steps ``t > K`` (``t`` from 0).
        seed: seeds the stochastic rounding of bf16 base weights (with the step and the layer).

    Create it once the adapters hold their starting values (initialised, or loaded on resume):
    those are the "previous" factors of the first step.
    """

    def __init__(self, model: nn.Module, update_ratio: float, start_step: int = 0, seed: int = 0) -> None:
        self.layers = delta_lora_layers(model)
        self.update_ratio = float(update_ratio)
        self.start_step = int(start_step)
        self.seed = int(seed)
        self.previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.remember_factors()

    def remember_factors(self) -> None:
        """Take the current ``A``, ``B`` of every layer as the previous step's."""
        self.previous = {
            name: (m.lora_a.weight.detach().clone(), m.lora_b.weight.detach().clone())
            for name, m in self.layers.items()
        }

    @torch.no_grad()
    def after_step(self, step_index: int) -> None:
        """Call after optimizer step ``step_index`` (from 0): move each ``W`` by ``lambda * s *
        (B A - B_prev A_prev)`` when ``step_index > start_step``; then remember ``A``, ``B``."""
        update = step_index > self.start_step
        for index, (name, module) in enumerate(self.layers.items()):
            a_prev, b_prev = self.previous[name]
            a, b = module.lora_a.weight, module.lora_b.weight
            if update:
                weight = module.weight
                factor_b, factor_a = torch.cat([b, b_prev], dim=1), torch.cat([a, -a_prev], dim=0)
                alpha = self.update_ratio * module.scaling
                if weight.dtype == torch.bfloat16:
                    exact = torch.addmm(weight.float(), factor_b.float(), factor_a.float(), alpha=alpha)
                    generator = torch.Generator(device=weight.device)
                    generator.manual_seed(self.seed * 1_000_003 + step_index * 10_007 + index)
                    weight.copy_(round_to_bf16_stochastically(exact, generator))
                else:
                    weight.addmm_(factor_b.to(weight.dtype), factor_a.to(weight.dtype), alpha=alpha)
            a_prev.copy_(a)
            b_prev.copy_(b)

    def base_state(self) -> dict[str, torch.Tensor]:
        """The updated base weights (``<layer>.weight``), on the CPU: what a resume needs back."""
        return {f"{name}.weight": m.weight.detach().cpu().clone() for name, m in self.layers.items()}

    @torch.no_grad()
    def load_base_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Put back the base weights `base_state` returned (then the factors are the previous ones)."""
        expected = {f"{name}.weight": m for name, m in self.layers.items()}
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ConfigError(
                "the checkpoint's Delta-LoRA base weights do not fit this model's LoRA layers "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})",
                fix="resume with the lora_attn_modules / apply_lora_to_mlp / apply_lora_to_output of the run that "
                "saved it",
            )
        for key, module in expected.items():
            module.weight.copy_(tensors[key].to(module.weight.device, module.weight.dtype))
        self.remember_factors()
