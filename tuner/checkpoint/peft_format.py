"""Adapters in HF PEFT's on-disk format: ``adapter_model.safetensors`` + ``adapter_config.json``.

`save_peft_adapter` writes what ``peft.PeftModel.from_pretrained(<transformers base>, dir)`` loads
as is; `load_peft_adapter` reads a PEFT-trained adapter back into tuner's keys, and
`load_peft_adapter_config` gives the `apply_lora` settings that build a matching model.

Keys: tuner ``layers.0.attn.q_proj.lora_a.weight`` <->
PEFT ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``. The module path goes
through the HF key maps (`tuner.checkpoint.hf_keys`: ``tuner_to_hf`` / ``hf_to_tuner``); the adapter
tails are renamed here (``lora_a/lora_b`` <-> ``lora_A/lora_B``, ``magnitude`` <->
``lora_magnitude_vector``, VeRA's ``vera_lambda_b/d`` unchanged, the shared
``vera_projections.vera_A/B`` <-> ``base_model.vera_A/B``).

PiSSA: tuner trains over the residual base ``W - s B0 A0``. By default the export is PEFT's
"PiSSA converted to LoRA" (``path_initial_model_for_weight_conversion``): rank ``2r`` with
``A' = [A; A0]``, ``B' = [B, -B0]`` and alpha doubled (``sqrt(2)`` x for rsLoRA), which applies over
the original base weights. With ``convert_pissa=False`` the adapter is written as is and applies
over the residual base (the model's own base weights, which the full checkpoint saves). Either way the
config says ``init_lora_weights: true`` as PEFT's PiSSA recipe does, so that loading does not re-run
the SVD.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from safetensors.torch import save_file
from torch import nn

from tuner.checkpoint.hf_keys import HF_LINEAR_NAMES, hf_to_tuner, tuner_to_hf
from tuner.checkpoint.weights import load_weight_file
from tuner.errors import TunerError
from tuner.peft.utils import get_adapter_state_dict, is_adapter_key, lora_config_from_model
from tuner.peft.vera import VERA_PROJECTIONS_NAME

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_WEIGHTS_BIN = "adapter_model.bin"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."

# tuner tail -> PEFT tail (after the module path)
_TAILS = {
    "lora_a.weight": "lora_A.weight",
    "lora_b.weight": "lora_B.weight",
    "magnitude": "lora_magnitude_vector",
    "vera_lambda_b": "vera_lambda_b",
    "vera_lambda_d": "vera_lambda_d",
}
_TAILS_INV = {v: k for k, v in _TAILS.items()}
_TAILS_INV["lora_magnitude_vector.weight"] = "magnitude"  # older PEFT releases


def _split_tail(key: str, tails: Mapping[str, str]) -> tuple[str, str]:
    for tail in sorted(tails, key=len, reverse=True):
        if key.endswith("." + tail):
            return key[: -len(tail) - 1], tail
    raise TunerError(f"{key!r} is not an adapter key this format knows", fix=f"expected keys ending in {sorted(tails)}")


# ------------------------------------------------------------------------------------ config
def _peft_config(lora_config: Mapping[str, Any], target_modules: list[str], pissa_converted: bool) -> dict[str, Any]:
    cfg = dict(lora_config)
    rank = cfg.get("lora_rank", cfg.get("r"))
    if rank is None:
        raise TunerError("lora_config lacks lora_rank", fix="pass lora_config={'lora_rank': ..., 'lora_alpha': ...}")
    common = {
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": cfg.get("base_model_name_or_path"),
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "revision": None,
    }
    if cfg.get("use_vera"):
        return {
            "peft_type": "VERA",
            "r": int(rank),
            "vera_dropout": float(cfg.get("lora_dropout", 0.0)),
            "d_initial": float(cfg.get("vera_d_initial", 0.1)),
            "projection_prng_key": int(cfg.get("projection_prng_key", 0)),
            "save_projection": True,
            "init_weights": True,
            **common,
        }
    alpha = cfg.get("lora_alpha")
    if alpha is None:
        raise TunerError("lora_config lacks lora_alpha", fix="pass lora_config={'lora_rank': ..., 'lora_alpha': ...}")
    use_rslora = bool(cfg.get("use_rslora", False))
    # Always True: PEFT re-runs a PiSSA initialisation on load (rewriting the base) otherwise, which
    # is why PEFT's own PiSSA recipe saves adapters with init_lora_weights=True.
    init = True
    if pissa_converted:
        rank, alpha = 2 * int(rank), alpha * (math.sqrt(2) if use_rslora else 2)
    return {
        "peft_type": "LORA",
        "r": int(rank),
        "lora_alpha": alpha,
        "lora_dropout": float(cfg.get("lora_dropout", 0.0)),
        "use_rslora": use_rslora,
        "use_dora": bool(cfg.get("use_dora", False)),
        "init_lora_weights": init,
        "lora_bias": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        **common,
    }


def _infer_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What an adapter state dict tells by itself: method, rank, DoRA (alpha and rsLoRA it cannot)."""
    for key, value in sd.items():
        if key.endswith("vera_lambda_d"):
            return {"use_vera": True, "lora_rank": int(value.shape[0])}
        if key.endswith("lora_a.weight"):
            return {"lora_rank": int(value.shape[0]), "use_dora": any(k.endswith(".magnitude") for k in sd)}
    return {}


# ------------------------------------------------------------------------------------ export
def save_peft_adapter(
    model_or_adapter_sd: Union[nn.Module, Mapping[str, torch.Tensor]],
    output_dir: Union[str, os.PathLike],
    model_type: str,
    hf_config: Optional[Mapping[str, Any]] = None,
    lora_config: Optional[Mapping[str, Any]] = None,
    *,
    convert_pissa: bool = True,
) -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``output_dir`` as HF PEFT does.

    Args:
        model_or_adapter_sd: a model with adapters, or a tuner adapter state dict
            (`tuner.peft.get_adapter_state_dict`); extra base keys are ignored.
        output_dir: folder to write into (created).
        model_type: the family's model type (LLAMA3, QWEN2, ...) or alias.
        hf_config: the checkpoint's config.json dict (the key maps need it for some families).
        lora_config: ``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``use_dora``, ``use_rslora``,
            ``use_vera``, ``vera_d_initial``, ``projection_prng_key``, ``base_model_name_or_path``
            (the recipe's model settings). Given a model, they are read from it and these override;
            given a state dict, rank / DoRA / VeRA are read from its keys, and ``lora_alpha`` (plus
            ``use_rslora`` when used) must be given.
        convert_pissa: export PiSSA as a plain LoRA over the original base (see the module docstring).

    Returns:
        the folder written.
    """
    if isinstance(model_or_adapter_sd, nn.Module):
        config = dict(lora_config_from_model(model_or_adapter_sd))
        config.update(lora_config or {})
        sd = get_adapter_state_dict(model_or_adapter_sd.state_dict())
    else:
        sd = {k: v for k, v in model_or_adapter_sd.items() if is_adapter_key(k)}
        config = _infer_config(sd)
        config.update(lora_config or {})
    if not sd:
        raise TunerError(
            "no adapter weights to save", fix="pass a model built with apply_lora or its adapter state dict"
        )
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}

    pissa_keys = [k for k in sd if k.endswith((".pissa_init_a", ".pissa_init_b"))]
    pissa_converted = bool(pissa_keys) and convert_pissa
    if pissa_converted:
        if any(k.endswith(".magnitude") for k in sd):
            raise TunerError(
                "a PiSSA adapter with DoRA cannot be converted to a plain LoRA", fix="save it with convert_pissa=False"
            )
        for key in [k for k in sd if k.endswith(".lora_a.weight")]:
            prefix = key[: -len("lora_a.weight")]
            a0, b0 = sd.pop(prefix + "pissa_init_a"), sd.pop(prefix + "pissa_init_b")
            sd[key] = torch.cat([sd[key], a0.to(sd[key].dtype)], dim=0)
            sd[prefix + "lora_b.weight"] = torch.cat([sd[prefix + "lora_b.weight"], -b0.to(sd[key].dtype)], dim=1)
    for k in pissa_keys:
        sd.pop(k, None)

    out: dict[str, torch.Tensor] = {}
    proj = {k: v for k, v in sd.items() if f"{VERA_PROJECTIONS_NAME}." in "." + k}
    for key, value in proj.items():
        out["base_model." + key.rsplit(".", 1)[-1]] = value  # base_model.vera_A / vera_B
    if any(k.endswith("vera_lambda_d") for k in sd) and len(proj) != 2:
        raise TunerError(
            "a VeRA adapter state dict lacks vera_projections.vera_A/vera_B", fix="save the full adapter state dict"
        )

    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in proj:
            continue
        module, tail = _split_tail(key, _TAILS)
        modules.setdefault(tail, {})[module + ".weight"] = value
    target_modules: set[str] = set()
    for tail, by_module in modules.items():
        for hf_key, value in tuner_to_hf(by_module, model_type, hf_config).items():
            hf_module = hf_key[: -len(".weight")]
            target_modules.add(hf_module.rsplit(".", 1)[-1])
            out[f"{_PEFT_PREFIX}{hf_module}.{_TAILS[tail]}"] = value

    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    peft_cfg = _peft_config(config, sorted(target_modules), pissa_converted)
    (path / ADAPTER_CONFIG).write_text(json.dumps(peft_cfg, indent=2, sort_keys=True) + "\n")
    return path


# ------------------------------------------------------------------------------------ import
def read_peft_config(adapter_dir: Path) -> dict[str, Any]:
    """``adapter_config.json`` of a PEFT adapter folder; TunerError for what tuner cannot load."""
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise TunerError(
            f"no {ADAPTER_CONFIG} in {adapter_dir}", fix="point adapter_dir at a folder saved by PEFT's save_pretrained"
        )
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TunerError(f"{path} is not valid JSON ({exc})") from None
    peft_type = str(cfg.get("peft_type", "")).upper()
    if peft_type not in ("LORA", "VERA"):
        raise TunerError(
            f"{path}: peft_type {cfg.get('peft_type')!r} is not supported", fix="use a LORA or VERA adapter"
        )
    unsupported = {
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
        "layers_to_transform": cfg.get("layers_to_transform") is not None,
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "bias": cfg.get("bias", "none") != "none",
        "lora_bias": bool(cfg.get("lora_bias")),
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise TunerError(f"{path}: PEFT options {bad} are not supported by tuner", fix="train the adapter without them")
    return cfg


def load_peft_adapter_config(adapter_dir: Union[str, os.PathLike]) -> dict[str, Any]:
    """The `apply_lora` settings matching a PEFT adapter folder (``lora_attn_modules``, ranks, variant)."""
    cfg = read_peft_config(Path(adapter_dir))
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        raise TunerError(f"target_modules is the regex {targets!r}; tuner needs a list of module names")
    inv = {v: k for k, v in HF_LINEAR_NAMES.items()}
    unknown = [t for t in targets if t not in inv]
    if unknown:
        raise TunerError(
            f"PEFT target_modules {unknown} have no tuner equivalent", fix=f"use modules from {sorted(inv)}"
        )
    tuner_targets = {inv[t] for t in targets}
    mlp = tuner_targets & {"w1", "w2", "w3"}
    if mlp and mlp != {"w1", "w2", "w3"}:
        raise TunerError(
            f"the adapter targets only {sorted(mlp)} of the MLP; apply_lora_to_mlp adapts w1, w2 and w3 together"
        )
    out: dict[str, Any] = {
        "lora_attn_modules": [m for m in ("q_proj", "k_proj", "v_proj", "output_proj") if m in tuner_targets],
        "apply_lora_to_mlp": bool(mlp),
        "apply_lora_to_output": "output" in tuner_targets,
        "lora_rank": int(cfg["r"]),
    }
    if cfg["peft_type"].upper() == "VERA":
        out.update(
            use_vera=True,
            lora_dropout=float(cfg.get("vera_dropout", 0.0)),
            vera_d_initial=float(cfg.get("d_initial", 0.1)),
            projection_prng_key=int(cfg.get("projection_prng_key", 0)),
        )
    else:
        out.update(
            lora_alpha=cfg["lora_alpha"],
            lora_dropout=float(cfg.get("lora_dropout", 0.0)),
            use_dora=bool(cfg.get("use_dora", False)),
            use_rslora=bool(cfg.get("use_rslora", False)),
        )
    return out


def load_peft_adapter(
    adapter_dir: Union[str, os.PathLike], model_type: str, hf_config: Optional[Mapping[str, Any]] = None
) -> dict[str, torch.Tensor]:
    """A PEFT adapter folder as a tuner adapter state dict (``model.load_state_dict(sd, strict=False)`` loads it).

    PEFT also saves the base weights of an adapted ``lm_head`` / embedding (``...base_layer.weight``);
    they are returned under their tuner base keys (``output.weight``), so loading restores them too.
    An unconverted PiSSA adapter (``init_lora_weights: pissa``) applies over the residual base
    weights saved next to it, not over the original model. VeRA adapters saved without their projections
    (``save_projection: false``) return only the lambdas; the model built with the same
    ``projection_prng_key`` regenerates the projections.
    """
    path = Path(adapter_dir)
    read_peft_config(path)  # validates the adapter config (refuses what tuner cannot load)
    if (path / ADAPTER_WEIGHTS).is_file():
        raw = load_weight_file(path / ADAPTER_WEIGHTS)
    elif (path / ADAPTER_WEIGHTS_BIN).is_file():
        raw = load_weight_file(path / ADAPTER_WEIGHTS_BIN)
    else:
        raise TunerError(
            f"no {ADAPTER_WEIGHTS} in {path}", fix="point adapter_dir at a folder saved by PEFT's save_pretrained"
        )
    out: dict[str, torch.Tensor] = {}
    by_tail: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in raw.items():
        if key in ("base_model.vera_A", "base_model.vera_B"):
            out[f"{VERA_PROJECTIONS_NAME}.{key.rsplit('.', 1)[-1]}"] = value
            continue
        if not key.startswith(_PEFT_PREFIX):
            raise TunerError(
                f"{path / ADAPTER_WEIGHTS}: unexpected key {key!r}", fix="use an adapter saved by PEFT for a causal LM"
            )
        hf_key = key[len(_PEFT_PREFIX) :]
        if hf_key.endswith(".base_layer.weight"):  # base weights PEFT saves with lm_head/embedding adapters
            by_tail.setdefault("weight", {})[hf_key[: -len(".base_layer.weight")] + ".weight"] = value
            continue
        module, tail = _split_tail(hf_key, _TAILS_INV)
        by_tail.setdefault(_TAILS_INV[tail], {})[module + ".weight"] = value
    for tail, by_module in by_tail.items():
        converted = hf_to_tuner(by_module, model_type, hf_config)
        if len(converted) != len(by_module):
            raise TunerError(
                f"{path}: some adapted modules have no tuner counterpart (e.g. lm_head of a model with tied "
                "embeddings)",
                fix="use an adapter without them",
            )
        for tuner_key, value in converted.items():
            out[tuner_key[: -len("weight")] + tail] = value
    return out
