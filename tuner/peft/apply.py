"""`apply_lora`: swap a model's named linear layers for LoRA (or VeRA) layers, in place.

The replaced layers keep the very same base weight tensors, so this works on a loaded model and
on one built on the meta device (then load the base weights and call
`tuner.peft.initialize_adapters(model)`, which needs real base weights for DoRA and PiSSA).
Module names follow the model zoo's contract: ``layers[i].attn.{q_proj,k_proj,v_proj,output_proj}``,
``layers[i].mlp.{w1,w2,w3}`` and ``output``.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from tuner.errors import ConfigError, TunerError, did_you_mean
from tuner.peft.lora import InitLoRAWeights, LoRALinear
from tuner.peft.vera import VERA_PROJECTIONS_NAME, VeRALinear, VeRAProjections
from tuner.quantization import (
    BaseDtype,
    FP8Linear,
    check_base_dtype,
    fp8_input_grad,
    has_fp8_copy,
    refresh_fp8_copy,
    register_fp8_copy,
)
from tuner.quantization.fp8_storage import SHARE_INPUT, computes_in_fp8

LORA_ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "output_proj")
LORA_MLP_MODULES = ("w1", "w2", "w3")


def _validate_attn_modules(lora_attn_modules: Iterable[str]) -> list[str]:
    if isinstance(lora_attn_modules, str):
        raise TunerError(
            f"lora_attn_modules must be a list, got the string {lora_attn_modules!r}",
            fix=f"write lora_attn_modules: ['{lora_attn_modules}']",
        )
    names = [str(n) for n in (lora_attn_modules or [])]
    unknown = [n for n in names if n not in LORA_ATTN_MODULES]
    if unknown:
        raise TunerError(
            f"unknown lora_attn_modules {unknown}",
            fix=f"choose from {list(LORA_ATTN_MODULES)}",
        )
    return names


def _wanted(name: str, attn: list[str], mlp: bool, output: bool) -> bool:
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] == "attn" and parts[-1] in attn:
        return True
    if mlp and len(parts) >= 2 and parts[-2] == "mlp" and parts[-1] in LORA_MLP_MODULES:
        return True
    return output and name == "output"


def _check_output(model: nn.Module) -> None:
    output = getattr(model, "output", None)
    embeddings = getattr(model, "tok_embeddings", None)
    tied = (
        output is None
        or not isinstance(output, nn.Linear)
        or (embeddings is not None and getattr(output, "weight", None) is getattr(embeddings, "weight", None))
    )
    if tied:
        raise TunerError(
            "apply_lora_to_output=True, but this model's output projection is tied to its token embeddings",
            fix="set apply_lora_to_output: False (models with tied embeddings, e.g. Llama 3.2 1B/3B, Qwen2.5 0.5B, "
            "Gemma 2, take no LoRA on the output)",
        )


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(
    model: nn.Module,
    lora_attn_modules: Iterable[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.0,
    use_dora: bool = False,
    quantize_base: bool = False,
    *,
    use_rslora: bool = False,
    lora_fa: bool = False,
    init_lora_weights: InitLoRAWeights = True,
    use_vera: bool = False,
    vera_d_initial: float = 0.1,
    projection_prng_key: int = 0,
    base_dtype: Optional[BaseDtype] = None,
    fp8_output: bool = False,
    fp8_shared_input: bool = True,
    **unknown: object,
) -> nn.Module:
    """Replace the chosen ``nn.Linear`` modules of ``model`` with `LoRALinear` (or `VeRALinear`).

    Args:
        model: a tuner decoder (module names as in docs/internals.md).
        lora_attn_modules: which attention projections to adapt, from q_proj, k_proj, v_proj, output_proj.
        apply_lora_to_mlp: also adapt the MLP's w1, w2, w3.
        apply_lora_to_output: also adapt the output projection (not allowed with tied embeddings).
        lora_rank, lora_alpha, lora_dropout: LoRA's r, alpha and adapter dropout (VeRA ignores alpha).
        use_dora, quantize_base, use_rslora, lora_fa, init_lora_weights: see `LoRALinear`.
        use_vera: VeRA instead of LoRA (shared random projections, trainable scaling vectors);
            ``vera_d_initial`` and ``projection_prng_key`` as in PEFT's ``VeraConfig``.
        base_dtype: ``"fp8"`` (or ``"fp8_fwd"`` / ``"fp8_all"``, `tuner.quantization.BaseDtype`) stores the
            frozen base in FP8 (per-row scales) and runs its GEMMs in FP8 on Ada / Hopper GPUs (emulated on
            CPU): each adapted layer's and every frozen attention / MLP linear of the blocks that is not
            adapted (`FP8Linear`); the output projection and embeddings stay. With ``quantize_base`` (the
            qlora_* builders) the adapted layers' base stays stored in NF4 (the same memory and keys) and
            only their GEMMs run in FP8: each call dequantizes the NF4 weight and quantizes it per row
            (`tuner.quantization.compute_nf4_in_fp8`); the layers that are not adapted stay dense, as in
            QLoRA. ``fp8_fwd`` / ``fp8_all`` mean the same in both. None (default): the model's dtype (or
            NF4 computing in it).
        fp8_output: with ``base_dtype``, the loss's logits GEMM (and its input gradient) in FP8 too, on an
            FP8 copy of the frozen output weight (`tuner.quantization.register_fp8_copy`: vocab x dim bytes
            more; the dense weight stays for the embedding lookup, generation and export). Refreshed from
            the loaded weight by `initialize_adapters`. Not with ``apply_lora_to_output`` or soft-capping.
        fp8_shared_input: with ``base_dtype``, the FP8 projections that read one activation (q/k/v; the
            MLP's gate and up) quantize it once (`tuner.quantization.shared_fp8_input`; the same numbers,
            fewer passes over it); False quantizes it once per projection, for measuring only.

    Returns:
        the same ``model``, modified in place.
    """
    if unknown:
        valid = [
            "use_rslora",
            "lora_fa",
            "init_lora_weights",
            "use_vera",
            "vera_d_initial",
            "projection_prng_key",
            "base_dtype",
            "fp8_output",
            "fp8_shared_input",
        ]
        said = ", ".join(f"{k!r}{did_you_mean(k, valid)}" for k in unknown)
        raise TunerError(f"unknown LoRA option(s) {said}", fix=f"LoRA variant options are {valid}")
    check_base_dtype(base_dtype, quantize_base)
    if fp8_output:
        _check_fp8_output(model, base_dtype, apply_lora_to_output)
    attn = _validate_attn_modules(lora_attn_modules)
    if not attn and not apply_lora_to_mlp and not apply_lora_to_output:
        raise TunerError(
            "LoRA is applied to no layer: lora_attn_modules is empty and apply_lora_to_mlp/apply_lora_to_output are "
            "False",
            fix="set lora_attn_modules: ['q_proj', 'v_proj'] (or enable apply_lora_to_mlp)",
        )
    if use_vera and (use_dora or lora_fa or use_rslora or init_lora_weights not in (True, False)):
        raise TunerError(
            "use_vera cannot be combined with use_dora, use_rslora, lora_fa or a PiSSA initialisation",
            fix="choose one adapter method",
        )
    if apply_lora_to_output:
        _check_output(model)

    targets: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if not _wanted(name, attn, apply_lora_to_mlp, apply_lora_to_output):
            continue
        if isinstance(module, (LoRALinear, VeRALinear)):
            raise TunerError(f"module {name!r} already carries an adapter", fix="call apply_lora once per model")
        if not isinstance(module, nn.Linear):
            raise TunerError(f"module {name!r} is a {type(module).__name__}, not nn.Linear; LoRA cannot wrap it")
        targets.append((name, module))
    found = {n.split(".")[-1] for n, _ in targets}
    missing = [n for n in attn if n not in found]
    if missing or (apply_lora_to_mlp and not found & set(LORA_MLP_MODULES)):
        raise TunerError(
            f"the model has no layers named {missing or list(LORA_MLP_MODULES)} under layers[i].attn / layers[i].mlp",
            fix="check lora_attn_modules / apply_lora_to_mlp against the model",
        )

    projections: Optional[VeRAProjections] = None
    if use_vera:
        max_in = max(m.in_features for _, m in targets)
        max_out = max(m.out_features for _, m in targets)
        projections = VeRAProjections(lora_rank, max_in, max_out, projection_prng_key)
        device = targets[0][1].weight.device
        if device.type != "meta":
            projections.to(device)
        model.add_module(VERA_PROJECTIONS_NAME, projections)

    for name, linear in targets:
        weight, bias = linear.weight, linear.bias
        if use_vera:
            new: nn.Module = VeRALinear(
                linear.in_features,
                linear.out_features,
                lora_rank,
                projections,
                dropout=lora_dropout,
                d_initial=vera_d_initial,
                quantize_base=quantize_base,
                weight=weight,
                bias=bias,
                base_dtype=base_dtype,
            )
        else:
            new = LoRALinear(
                linear.in_features,
                linear.out_features,
                lora_rank,
                lora_alpha,
                dropout=lora_dropout,
                use_dora=use_dora,
                quantize_base=quantize_base,
                use_rslora=use_rslora,
                lora_fa=lora_fa,
                init_lora_weights=init_lora_weights,
                weight=weight,
                bias=bias,
                base_dtype=base_dtype,
            )
        new.train(linear.training)
        _set_module(model, name, new)
    if base_dtype is not None:
        if not quantize_base:  # QLoRA keeps its frozen linears as they are (dense, like its memory)
            _frozen_block_linears_to_fp8(model, fp8_input_grad(base_dtype))
        for module in model.modules():
            if computes_in_fp8(module):
                setattr(module, SHARE_INPUT, bool(fp8_shared_input))
    if fp8_output:
        register_fp8_copy(model.output, fp8_input_grad=fp8_input_grad(base_dtype))
    return model


def _check_fp8_output(model: nn.Module, base_dtype: Optional[str], apply_lora_to_output: bool) -> None:
    """fp8_output needs an FP8 base recipe, a frozen output projection and plain logits (no soft-capping)."""
    if base_dtype is None:
        raise ConfigError(
            "fp8_output: True needs an FP8 base (it follows base_dtype's recipe)",
            fix="set model.base_dtype: fp8, or drop model.fp8_output",
        )
    if apply_lora_to_output:
        raise ConfigError(
            "fp8_output: True keeps a frozen FP8 copy of the output projection, which apply_lora_to_output trains",
            fix="set model.apply_lora_to_output: False, or drop model.fp8_output",
        )
    if getattr(model, "final_softcap", None) is not None:
        raise ConfigError(
            "fp8_output: True computes the logits in the loss as hidden @ W^T, which this model soft-caps",
            fix="drop model.fp8_output for this model (Gemma 2)",
        )


def _frozen_block_linears_to_fp8(model: nn.Module, fp8_grad: bool) -> None:
    """Store every plain (not adapted) attention / MLP linear of the blocks in FP8 (`FP8Linear`)."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and _wanted(name, list(LORA_ATTN_MODULES), True, False):
            fp8 = FP8Linear(module, fp8_input_grad=fp8_grad)
            fp8.train(module.training)
            _set_module(model, name, fp8)


def _base_device(module: nn.Module) -> torch.device:
    return module.base_storage().device


def _materialize(module: nn.Module, device: torch.device) -> None:
    """Give an adapter's own meta tensors (not the base) real, uninitialised storage on ``device``."""
    for name, param in list(module._parameters.items()):
        if param is not None and param.is_meta and name not in ("weight", "bias"):
            module._parameters[name] = nn.Parameter(
                torch.empty_like(param, device=device), requires_grad=param.requires_grad
            )
    for name, buf in list(module._buffers.items()):
        if buf is not None and buf.is_meta and not name.startswith("weight"):
            module._buffers[name] = torch.empty_like(buf, device=device)
    for child in module.children():
        if any(t.is_meta for t in child.parameters()):
            child.to_empty(device=device)


def initialize_adapters(model: nn.Module, device: Optional[torch.device] = None) -> None:
    """(Re)initialise every adapter from the current base weights.

    The step after loading base weights into a model built on the meta device (e.g. with
    ``load_state_dict(sd, strict=False, assign=True)``): adapter tensors still on meta get storage
    on the base weight's device (or ``device``), and DoRA's magnitude and PiSSA's factors are
    computed from the loaded base; VeRA's projections are regenerated from their seed (``to_empty``
    leaves them uninitialised). Do not call it after loading a trained adapter (it resets it).
    """
    adapters = [m for m in model.modules() if isinstance(m, (LoRALinear, VeRALinear))]
    for module in adapters:
        base_device = _base_device(module)
        if base_device.type == "meta":
            raise TunerError(
                "initialize_adapters found a base weight still on the meta device",
                fix="load the base checkpoint (load_state_dict(sd, strict=False, assign=True)) first",
            )
        _materialize(module, device or base_device)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, VeRAProjections):
                target = device or (_base_device(adapters[0]) if adapters else torch.device("cpu"))
                fresh = VeRAProjections(
                    module.vera_A.shape[0], module.vera_A.shape[1], module.vera_B.shape[0], module.projection_prng_key
                )
                module.vera_A = fresh.vera_A.to(target)
                module.vera_B = fresh.vera_B.to(target)
        for module in adapters:
            module.initialize_adapter()
        for module in model.modules():
            if has_fp8_copy(module):  # the output projection's FP8 copy (fp8_output), from the loaded weight
                refresh_fp8_copy(module)
