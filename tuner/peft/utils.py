"""Adapter utilities: find, freeze, count, extract and merge adapter parameters; LoRA+ groups.

Adapter state-dict keys are recognised by name: ``<module>.lora_a.weight``, ``<module>.lora_b.weight``,
``<module>.magnitude`` (DoRA), ``<module>.pissa_init_a|b`` (PiSSA's starting factors),
``<module>.vera_lambda_b|d`` and the model-level ``vera_projections.vera_A|B`` (VeRA).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch
from torch import nn

from tuner.errors import CheckpointError, TunerError
from tuner.peft.apply import LORA_MLP_MODULES
from tuner.peft.lora import LoRALinear, dora_merged_weight, lora_delta, lora_scaling
from tuner.peft.vera import VERA_PROJECTIONS_NAME, VeRALinear, VeRAProjections, vera_delta

ADAPTER_MODULES = (LoRALinear, VeRALinear)
#: The endings of every adapter tensor's key (after its module's path): the one list of them.
ADAPTER_KEY_SUFFIXES = (
    ".lora_a.weight",
    ".lora_b.weight",
    ".magnitude",
    ".pissa_init_a",
    ".pissa_init_b",
    ".vera_lambda_b",
    ".vera_lambda_d",
)


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key belongs to an adapter rather than to the base model."""
    dotted = "." + key
    return dotted.endswith(ADAPTER_KEY_SUFFIXES) or f".{VERA_PROJECTIONS_NAME}." in dotted


def adapted_module(key: str) -> str | None:
    """The module path an adapter tensor's key belongs to (``layers.0.attn.q_proj.lora_a.weight`` ->
    ``layers.0.attn.q_proj``); None for other keys (and VeRA's shared projections)."""
    for suffix in ADAPTER_KEY_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None


def get_adapter_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """All adapter parameters of ``model`` by their full name (LoRA-FA's frozen ``A`` included).

    Every module with an ``adapter_params()`` method (torchtune's `AdapterModule` protocol, which
    tuner's adapter layers follow) contributes the parameters it names.
    """
    params: dict[str, nn.Parameter] = {}
    for mname, module in model.named_modules():
        if not callable(getattr(module, "adapter_params", None)):
            continue
        wanted = list(module.adapter_params())
        for pname, param in module.named_parameters():
            if pname in wanted:
                params[f"{mname}.{pname}" if mname else pname] = param
                wanted.remove(pname)
        if wanted:
            raise TunerError(f"{type(module).__name__}.adapter_params() names parameters it does not have: {wanted}")
    return params


def set_trainable_params(model: nn.Module, adapter_params: Mapping[str, Any] | Iterable[str]) -> None:
    """Train exactly ``adapter_params`` (names or a name->param dict); freeze everything else.

    Parameters an adapter keeps frozen by design (LoRA-FA's ``lora_a``) stay frozen.
    """
    names = set(adapter_params.keys() if isinstance(adapter_params, Mapping) else adapter_params)
    all_params = dict(model.named_parameters())
    unknown = sorted(names - set(all_params))
    if unknown:
        raise TunerError(f"set_trainable_params got names the model does not have: {unknown[:5]}")
    for name, param in all_params.items():
        param.requires_grad_(name in names)
    for mname, module in model.named_modules():
        if isinstance(module, ADAPTER_MODULES):
            for pname in module.frozen_adapter_param_names():
                all_params[f"{mname}.{pname}" if mname else pname].requires_grad_(False)


def get_adapter_state_dict(
    state_dict: Mapping[str, Any], device: Optional[str | torch.device] = "cpu"
) -> dict[str, Any]:
    """The adapter entries of a model state dict (moved to ``device`` unless it is None): tuner's
    adapter keys, and any key naming a ``lora`` or ``magnitude`` tensor (torchtune's rule, for
    adapter modules of one's own)."""
    return {
        k: (v.to(device) if device is not None and isinstance(v, torch.Tensor) else v)
        for k, v in state_dict.items()
        if is_adapter_key(k) or "lora" in k or "magnitude" in k
    }


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def trainable_params_summary(model: nn.Module) -> str:
    """``"trainable 0.85% (10.5M / 1.24B)"``: trainable over all parameters (shared ones once)."""
    seen: set[int] = set()
    total = trainable = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    # NF4 bases are buffers, not parameters; count their logical size as frozen parameters.
    total += sum(m.base_numel() for m in model.modules() if isinstance(m, ADAPTER_MODULES) and m.base_is_quantized())
    pct = 100.0 * trainable / total if total else 0.0
    return f"trainable {pct:.2f}% ({_human(trainable)} / {_human(total)})"


def lora_plus_param_groups(
    model: nn.Module, lr: float, lora_plus_ratio: float = 16.0, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Optimizer param groups for LoRA+ (PEFT's ``create_loraplus_optimizer`` grouping).

    ``lora_b`` weights and the other 1-D trainable parameters (DoRA magnitude, VeRA lambdas) train at
    ``lr * lora_plus_ratio``; ``lora_a`` and every other trainable parameter at ``lr``. Biases take no
    weight decay. Frozen parameters are left out.
    """
    if not lora_plus_ratio or lora_plus_ratio <= 0:
        raise TunerError(f"lora_plus_ratio must be positive, got {lora_plus_ratio!r}", fix="set lora_plus_ratio: 16")
    norm_params = {
        id(p) for m in model.modules() if "norm" in type(m).__name__.lower() for p in m.parameters(recurse=False)
    }
    group_a, group_b, group_b_no_decay = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_b" in name or param.ndim == 1:
            no_decay = "bias" in name or id(param) in norm_params
            (group_b_no_decay if no_decay else group_b).append(param)
        else:
            group_a.append(param)
    groups = [
        {"params": group_a, "lr": lr, "weight_decay": weight_decay},
        {"params": group_b, "lr": lr * lora_plus_ratio, "weight_decay": weight_decay},
        {"params": group_b_no_decay, "lr": lr * lora_plus_ratio, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TunerError("lora_plus_param_groups found no trainable parameter", fix="call set_trainable_params first")
    return groups


# ------------------------------------------------------------------------------------------ merge
def merge_lora_weights(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight, in place: each `LoRALinear`/`VeRALinear` becomes a
    plain ``nn.Linear`` with the merged weight (PEFT's ``merge_and_unload``; DoRA, VeRA and PiSSA
    included). An NF4 base is dequantized. Returns ``model``.
    """
    for name, module in list(model.named_modules()):
        if not isinstance(module, ADAPTER_MODULES):
            continue
        with torch.no_grad():
            weight = module.merged_weight()
            if not module.base_is_quantized():
                weight = weight.to(module.weight.dtype)
        linear = nn.Linear(module.in_dim, module.out_dim, bias=module.bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.detach(), requires_grad=False)
        if module.bias is not None:
            linear.bias = nn.Parameter(module.bias.detach().to(weight.dtype), requires_grad=False)
        linear.train(module.training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, linear)
    for name, module in list(model.named_modules()):
        if isinstance(module, VeRAProjections):
            parent_name, _, child = name.rpartition(".")
            delattr(model.get_submodule(parent_name) if parent_name else model, child)
    return model


def get_merged_lora_ckpt(
    state_dict: Mapping[str, torch.Tensor],
    rank: Optional[int] = None,
    alpha: Optional[float] = None,
    use_rslora: bool = False,
) -> dict[str, torch.Tensor]:
    """A base-model state dict with every adapter merged into its base weight (adapter keys removed).

    Works on tuner state dicts of LoRA (``rank``/``alpha``/``use_rslora`` give the scaling), DoRA
    (``magnitude`` present), PiSSA (the stored base is already the residual) and VeRA (lambdas and the
    shared ``vera_projections``). An NF4 base is dequantized. The input is not modified.
    """
    sd = dict(state_dict)
    merged = {k: v for k, v in sd.items() if not is_adapter_key(k)}
    for key in sd:
        if key.endswith("lora_a.weight"):
            prefix = key[: -len("lora_a.weight")]
            if rank is None or alpha is None:
                raise TunerError(
                    "get_merged_lora_ckpt needs rank and alpha to merge LoRA weights",
                    fix="pass lora_rank and lora_alpha",
                )
            a, b = sd[key], sd[prefix + "lora_b.weight"]
            if a.shape[0] != rank:
                raise TunerError(
                    f"{key} has rank {a.shape[0]} but rank={rank} was given",
                    fix="pass the lora_rank the adapter was trained with",
                )
            base = _base(sd, prefix).to(a.dtype)
            scaling = lora_scaling(rank, alpha, use_rslora)
            if prefix + "magnitude" in sd:
                new = dora_merged_weight(base, a, b, scaling, sd[prefix + "magnitude"])
            else:
                new = base + lora_delta(a, b, scaling)
            merged[prefix + "weight"] = new.to(sd[prefix + "weight"].dtype)
        elif key.endswith("vera_lambda_d"):
            prefix = key[: -len("vera_lambda_d")]
            proj = _vera_projection_keys(sd)
            lambda_d, lambda_b = sd[key], sd[prefix + "vera_lambda_b"]
            base_t = _base(sd, prefix)
            base = base_t.to(lambda_d.dtype)
            out_dim, in_dim = base.shape
            r = lambda_d.shape[0]
            delta = vera_delta(sd[proj[0]][:r, :in_dim], sd[proj[1]][:out_dim, :r], lambda_d, lambda_b)
            merged[prefix + "weight"] = (base + delta).to(base_t.dtype)
    return merged


def _base(sd: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    if prefix + "weight" in sd:
        return sd[prefix + "weight"]
    if prefix + "weight_nf4" in sd:
        raise TunerError(
            f"{prefix}weight is stored in NF4; get_merged_lora_ckpt needs dense base weights",
            fix="pass tuner.quantization.dequantized_state_dict(model) instead of model.state_dict()",
        )
    raise TunerError(f"the state dict has an adapter for {prefix.rstrip('.')} but no base weight {prefix}weight")


def _vera_projection_keys(sd: Mapping[str, Any]) -> tuple[str, str]:
    keys = [k for k in sd if k.endswith(f"{VERA_PROJECTIONS_NAME}.vera_A")]
    if not keys:
        raise TunerError(
            "the state dict has VeRA lambdas but no vera_projections.vera_A/vera_B",
            fix="save the adapter with its shared projections",
        )
    return keys[0], keys[0][: -len("vera_A")] + "vera_B"


class LoRAStateDictError(CheckpointError, AssertionError):
    """Base or adapter weights do not fit the LoRA model (an AssertionError too, as torchtune's)."""


def get_lora_module_names(
    lora_attn_modules: Iterable[str], apply_lora_to_mlp: bool, apply_lora_to_output: bool
) -> list[str]:
    """Names of the layers LoRA adapts under these settings (``q_proj``, ..., ``w1``, ``output``)."""
    names = list(lora_attn_modules)
    if apply_lora_to_mlp:
        names += list(LORA_MLP_MODULES)
    if apply_lora_to_output:
        names.append("output")
    return names


def validate_missing_and_unexpected_for_lora(
    lora_attn_modules: Optional[Iterable[str]] = None,
    apply_lora_to_mlp: Optional[bool] = None,
    apply_lora_to_output: Optional[bool] = None,
    base_missing: Optional[Iterable[str]] = None,
    base_unexpected: Optional[Iterable[str]] = None,
    lora_missing: Optional[Iterable[str]] = None,
    lora_unexpected: Optional[Iterable[str]] = None,
) -> None:
    """Check the results of loading base weights and then an adapter with ``strict=False``.

    Loading the base may miss only adapter keys; loading the adapter may miss only base keys;
    neither may bring unexpected keys. With the LoRA settings (``lora_attn_modules``, ...) a key is
    an adapter key only if it belongs to a layer those settings adapt; without them, by name.
    Raises `LoRAStateDictError` naming the key and the fix.
    """
    if lora_attn_modules is None:
        is_lora = is_adapter_key
    else:
        modules = get_lora_module_names(lora_attn_modules, bool(apply_lora_to_mlp), bool(apply_lora_to_output))
        # torchtune's check: a key is its module's name followed by an adapter tensor's name (or its start).
        names = {suffix[1:].split(".")[0] for suffix in ADAPTER_KEY_SUFFIXES}  # lora_a, magnitude, vera_lambda_b, ...
        tags = tuple({n.rsplit("_", 1)[0] if n.endswith(("_a", "_b", "_d")) else n for n in names})

        def is_lora(key: str) -> bool:
            return f".{VERA_PROJECTIONS_NAME}." in "." + key or any(
                f"{m}.{tag}" in key for m in modules for tag in tags
            )

    for key in base_missing or []:
        if not is_lora(key):
            raise LoRAStateDictError(
                f"Missing non-LoRA key {key} from base model dict: the base checkpoint lacks model weights",
                "check checkpoint_files and model_type against the model",
            )
    if base_unexpected:
        raise LoRAStateDictError(
            "Unexpected key loading base model (the base checkpoint has keys the model does not): "
            f"{_some(base_unexpected)}",
            "check that the model builder matches the checkpoint",
        )
    for key in lora_missing or []:
        if is_lora(key):
            raise LoRAStateDictError(
                f"Missing LoRA key {key} from adapter state dict: the adapter checkpoint lacks adapter weights",
                "use an adapter trained with the same lora_attn_modules / apply_lora_to_mlp / rank settings",
            )
    if lora_unexpected:
        raise LoRAStateDictError(
            "Unexpected key loading adapter (the adapter checkpoint has keys the model does not): "
            f"{_some(lora_unexpected)}",
            "use an adapter trained with the same LoRA settings",
        )


def _some(keys: Iterable[str]) -> str:
    keys = list(keys)
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def disable_adapters(model: nn.Module, disabled: bool = True) -> None:
    """Switch every adapter off (base-model outputs, e.g. a DPO reference pass) or back on."""
    for module in model.modules():
        if callable(getattr(module, "adapter_params", None)) and hasattr(module, "disabled"):
            module.disabled = disabled


@contextlib.contextmanager
def disable_adapter(model: nn.Module) -> Iterator[nn.Module]:
    """Within the ``with`` block the model computes without its adapters (torchtune's name)."""
    disable_adapters(model, True)
    try:
        yield model
    finally:
        disable_adapters(model, False)


def clone_merged(model: nn.Module) -> nn.Module:
    """A merged deep copy of ``model``; the original keeps its adapters."""
    return merge_lora_weights(copy.deepcopy(model))


def lora_config_from_model(model: nn.Module) -> dict[str, Any]:
    """The adapter settings of a model that went through `apply_lora` (what an adapter file records)."""
    layers = [m for m in model.modules() if isinstance(m, (LoRALinear, VeRALinear))]
    if not layers:
        raise TunerError(
            "the model has no LoRA/VeRA layers", fix="build it with a lora_* builder or tuner.peft.apply_lora"
        )
    first = layers[0]
    dropout = first.dropout.p if isinstance(first.dropout, nn.Dropout) else 0.0
    if isinstance(first, VeRALinear):
        proj = next(m for m in model.modules() if isinstance(m, VeRAProjections))
        return {
            "use_vera": True,
            "lora_rank": first.rank,
            "lora_dropout": dropout,
            "vera_d_initial": first.d_initial,
            "projection_prng_key": proj.projection_prng_key,
        }
    return {
        "lora_rank": first.rank,
        "lora_alpha": first.alpha,
        "lora_dropout": dropout,
        "use_dora": first.use_dora,
        "use_rslora": first.use_rslora,
        "lora_fa": first.lora_fa,
        "init_lora_weights": first.init_lora_weights,
        "quantize_base": first.quantize_base,
        **({"base_dtype": first.base_dtype} if first.base_dtype else {}),
    }
