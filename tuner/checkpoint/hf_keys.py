"""State-dict keys between tuner and HF transformers checkpoints, for every registered family.

tuner uses torchtune's module names and HF's rotate-half rotary layout, so HF weights map by
renaming alone (`tuner.checkpoint.keys`), plus what a family's spec declares: other HF names for
some of a layer's modules (Gemma 2's extra norms) and projections HF fuses into one (Phi-3's
``qkv_proj`` / ``gate_up_proj``: split on load, fused on save). Adapter keys convert with the same
functions. ``model_type`` is any name `tuner.models.families.family` knows (``LLAMA3_1``, ``qwen2_5``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from tuner.checkpoint.keys import Renamer, clean_tuner_key, join, layer_module, tail_to_external, tail_to_tuner
from tuner.errors import ConfigError, TunerError
from tuner.models.families import family
from tuner.models.spec import FamilySpec

#: tuner module path inside a layer -> HF module path inside ``model.layers.{i}``
HF_LAYER = {
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.output_proj": "self_attn.o_proj",
    "attn.q_norm": "self_attn.q_norm",
    "attn.k_norm": "self_attn.k_norm",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.down_proj",
    "mlp.w3": "mlp.up_proj",
    "sa_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
}
HF_TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
#: tuner module name -> HF module name of the linear layers adapters go on (PEFT's target_modules)
HF_LINEAR_NAMES = {
    **{
        k.rsplit(".", 1)[-1]: v.rsplit(".", 1)[-1]
        for k, v in HF_LAYER.items()
        if k.startswith(("attn.", "mlp.")) and not k.endswith("_norm")
    },
    "output": "lm_head",
}


def hf_renamer(spec: FamilySpec) -> Renamer:
    """The HF key renaming of ``spec``'s checkpoints."""
    return Renamer(HF_TOP, {**HF_LAYER, **spec.hf_layer_keys}, "model.layers.")


def hf_dims(hf_config: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(attention heads, key/value heads, head_dim) of an HF config.json dict."""
    c = hf_config or {}
    try:
        heads = int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
    except KeyError as e:
        raise ConfigError(f"HF config lacks {e.args[0]!r}", "pass the checkpoint's config.json as hf_config") from None
    return heads, kv, head_dim


def tied_embeddings(spec: FamilySpec, hf_config: Mapping[str, Any] | None) -> bool:
    """Whether the checkpoint described by ``hf_config`` ties its output to the embeddings."""
    return bool((hf_config or {}).get("tie_word_embeddings", spec.hf_tied_default))


def tuner_module_path_to_hf(name: str, model_type: str) -> str:
    """HF module path of a tuner module path (``layers.0.attn.q_proj`` -> ``model.layers.0.self_attn.q_proj``).

    Modules HF fuses (Phi-3's q/k/v and w1/w3) have no HF module of their own: asking for one
    raises TunerError.
    """
    spec = family(model_type)
    hit = hf_renamer(spec).to_external(name)
    if hit is None or hit[1]:
        raise TunerError(
            f"{name!r} is not a module path of a tuner {spec.model_type} model",
            "pass a path such as 'layers.0.attn.q_proj'",
        )
    _refuse_fused(spec, hit[2], name)
    return hit[0]


def _refuse_fused(spec: FamilySpec, tuner_module: str, name: str) -> None:
    sub = layer_module(tuner_module)
    if sub in spec.hf_fused:
        raise TunerError(
            f"{name!r} has no module of its own in {spec.title} HF checkpoints (fused into {spec.hf_fused[sub]})",
            f"put adapters on modules HF keeps separate (not {', '.join(spec.hf_fused)}) for a PEFT export of "
            f"{spec.title}, or merge them into the weights",
        )


def fused_in_hf(tuner_key: str, model_type: str) -> bool:
    """Whether the module of ``tuner_key`` has no HF module of its own (Phi-3 fuses q/k/v into
    ``qkv_proj`` and w1/w3 into ``gate_up_proj``), so an adapter on it has no PEFT form."""
    fused = family(model_type).hf_fused
    parts = clean_tuner_key(tuner_key).split(".")
    return any(".".join(parts[i : i + 2]) in fused for i in range(len(parts) - 1))


def hf_to_tuner(
    state_dict: Mapping[str, torch.Tensor], model_type: str, hf_config: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Convert an HF transformers state dict (weights or adapter weights) to tuner keys.

    ``hf_config`` is the checkpoint's config.json dict; it tells whether the embeddings are tied (then
    ``lm_head.weight`` is dropped) and the sizes of fused projections (Phi-3).
    """
    spec = family(model_type)
    ren = hf_renamer(spec)
    tied = tied_embeddings(spec, hf_config)
    fused_modules = set(spec.hf_fused.values())
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue
        m = re.match(r"model\.layers\.(\d+)\.(.*)$", key)
        fused = m and next((f for f in fused_modules if m.group(2).startswith(f + ".")), None)
        if fused:
            out.update(_split_fused(spec, key, m.group(1), fused, value, hf_config))
            continue
        hit = ren.to_tuner(key)
        if hit is None:
            raise TunerError(
                f"unexpected key {key!r} in a {spec.model_type} HF checkpoint",
                "check that model_type matches the checkpoint",
            )
        mod, tail = hit
        out[join(mod, tail_to_tuner(mod, tail))] = value
    return out


def tuner_to_hf(
    state_dict: Mapping[str, torch.Tensor], model_type: str, hf_config: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Convert a tuner state dict (weights or adapter weights) to HF transformers keys.

    Wrapper names (activation checkpointing, ``torch.compile``) in the keys are dropped first.
    """
    spec = family(model_type)
    ren = hf_renamer(spec)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        key = clean_tuner_key(key)
        hit = ren.to_external(key)
        if hit is None:
            raise TunerError(
                f"unexpected key {key!r} in a tuner {spec.model_type} state dict",
                "check that model_type matches the model",
            )
        hf_mod, tail, mod = hit
        sub = layer_module(mod)
        if sub in spec.hf_fused:
            if tail != "weight":
                _refuse_fused(spec, mod, key)
            fused.setdefault(hf_mod.rsplit(".", 2)[0] + "." + spec.hf_fused[sub], {})[sub] = value
            continue
        out[join(hf_mod, tail_to_external(mod, tail))] = value
    for hf_mod, parts in fused.items():
        order = _fused_parts(spec, hf_mod.split(".", 3)[-1])
        missing = [p for p in order if p not in parts]
        if missing:
            raise TunerError(f"cannot fuse {hf_mod}: missing {missing}", "convert a complete state dict")
        out[f"{hf_mod}.weight"] = torch.cat([parts[p] for p in order], dim=0)
    return out


def _fused_parts(spec: FamilySpec, hf_module: str) -> list[str]:
    """The tuner modules fused into ``hf_module`` (``self_attn.qkv_proj``), in the fused tensor's order."""
    return [sub for sub, fused in spec.hf_fused.items() if fused == hf_module]


def _split_fused(
    spec: FamilySpec, key: str, layer: str, hf_module: str, value: torch.Tensor, hf_config: Mapping[str, Any] | None
) -> dict[str, torch.Tensor]:
    if key != f"model.layers.{layer}.{hf_module}.weight":
        raise TunerError(
            f"cannot split {spec.title} key {key!r}: only fused weights are supported",
            f"merge adapters on {hf_module} into the weights first",
        )
    parts = _fused_parts(spec, hf_module)
    heads, kv, hd = hf_dims(hf_config) if any(p.startswith("attn.") for p in parts) else (0, 0, 0)
    known = {"attn.q_proj": heads * hd, "attn.k_proj": kv * hd, "attn.v_proj": kv * hd}
    rest = [p for p in parts if p not in known]
    share = (value.shape[0] - sum(known.get(p, 0) for p in parts)) // max(len(rest), 1)
    pieces = value.split([known.get(p, share) for p in parts], dim=0)
    return {f"layers.{layer}.{p}.weight": w for p, w in zip(parts, pieces)}
