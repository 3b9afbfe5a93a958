"""State-dict key conversion between tuner and the HF / Meta checkpoint layouts.

tuner uses torchtune's module names and HF's rotate-half rotary layout, so HF weights map by
renaming alone (plus splitting Phi-3's fused ``qkv_proj`` / ``gate_up_proj`` on load and fusing them
on save). Meta's original Llama checkpoints use the interleaved rotary layout, so their q/k rows
are permuted.

Renaming works on module paths; whatever follows the module path (``weight``, ``bias``,
``lora_a.weight``, ``lora_b.weight``, ``magnitude``, quantisation state, ...) passes through, except
that norms' ``scale`` is HF's/Meta's ``weight``. So adapter keys convert with the same function:
``layers.0.attn.q_proj.lora_a.weight`` <-> ``model.layers.0.self_attn.q_proj.lora_a.weight``.

Also here: ``builder_kwargs_from_hf_config`` / ``build_model_from_hf_config``, which read a
checkpoint's ``config.json`` dict and build the matching tuner model.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Mapping

import torch

from tuner.errors import ConfigError, TunerError

MODEL_TYPES = ("LLAMA2", "LLAMA3", "LLAMA3_2", "MISTRAL", "QWEN2", "GEMMA2", "PHI3_MINI", "SMOLLM2")

_NORMS = {"sa_norm", "mlp_norm", "sa_scale", "mlp_scale", "norm"}

# tuner module path inside a layer -> HF module path inside ``model.layers.{i}``
_HF_LAYER = {
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.output_proj": "self_attn.o_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.down_proj",
    "mlp.w3": "mlp.up_proj",
    "sa_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
}
_HF_LAYER_GEMMA2 = {
    **_HF_LAYER,
    "sa_scale": "post_attention_layernorm",
    "mlp_norm": "pre_feedforward_layernorm",
    "mlp_scale": "post_feedforward_layernorm",
}
_HF_TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}

_META_LAYER = {
    "attn.q_proj": "attention.wq",
    "attn.k_proj": "attention.wk",
    "attn.v_proj": "attention.wv",
    "attn.output_proj": "attention.wo",
    "mlp.w1": "feed_forward.w1",
    "mlp.w2": "feed_forward.w2",
    "mlp.w3": "feed_forward.w3",
    "sa_norm": "attention_norm",
    "mlp_norm": "ffn_norm",
}
_META_TOP = {"tok_embeddings": "tok_embeddings", "norm": "norm", "output": "output"}

# Phi-3 fuses these tuner modules in its checkpoints.
_PHI3_FUSED = {"attn.q_proj": "self_attn.qkv_proj", "attn.k_proj": "self_attn.qkv_proj",
               "attn.v_proj": "self_attn.qkv_proj", "mlp.w1": "mlp.gate_up_proj", "mlp.w3": "mlp.gate_up_proj"}


def normalize_model_type(model_type: str) -> str:
    """Upper-cased ``model_type`` if it is one we convert; TunerError listing the valid ones otherwise."""
    mt = str(model_type).upper()
    if mt not in MODEL_TYPES:
        raise TunerError(
            f"unknown model_type {model_type!r}",
            f"use one of {', '.join(MODEL_TYPES)}",
        )
    return mt


def _layer_table(mt: str) -> dict[str, str]:
    return _HF_LAYER_GEMMA2 if mt == "GEMMA2" else _HF_LAYER


class _Renamer:
    """Bidirectional module-path renaming for one checkpoint layout."""

    def __init__(self, top: dict[str, str], layer: dict[str, str], layer_prefix: str) -> None:
        self.top, self.layer, self.layer_prefix = top, layer, layer_prefix
        self.top_inv = {v: k for k, v in top.items()}
        self.layer_inv = {v: k for k, v in layer.items()}

    @staticmethod
    def _split(rest: str, table: Mapping[str, str]) -> tuple[str, str] | None:
        for mod in sorted(table, key=len, reverse=True):
            if rest == mod or rest.startswith(mod + "."):
                return mod, rest[len(mod) + 1:]
        return None

    def to_external(self, key: str) -> tuple[str, str, str] | None:
        """tuner key -> (external module path, tail, tuner module path), or None if unknown."""
        m = re.match(r"layers\.(\d+)\.(.*)$", key)
        if m:
            hit = self._split(m.group(2), self.layer)
            if hit is None:
                return None
            mod, tail = hit
            return f"{self.layer_prefix}{m.group(1)}.{self.layer[mod]}", tail, f"layers.{m.group(1)}.{mod}"
        hit = self._split(key, self.top)
        if hit is None:
            return None
        mod, tail = hit
        return self.top[mod], tail, mod

    def to_tuner(self, key: str) -> tuple[str, str] | None:
        """external key -> (tuner module path, tail), or None if unknown."""
        prefix = re.escape(self.layer_prefix)
        m = re.match(rf"{prefix}(\d+)\.(.*)$", key)
        if m:
            hit = self._split(m.group(2), self.layer_inv)
            if hit is None:
                return None
            mod, tail = hit
            return f"layers.{m.group(1)}.{self.layer_inv[mod]}", tail
        hit = self._split(key, self.top_inv)
        if hit is None:
            return None
        mod, tail = hit
        return self.top_inv[mod], tail


def _hf_renamer(mt: str) -> _Renamer:
    return _Renamer(_HF_TOP, _layer_table(mt), "model.layers.")


_META_RENAMER = _Renamer(_META_TOP, _META_LAYER, "layers.")


def _is_norm(tuner_module: str) -> bool:
    return tuner_module.rsplit(".", 1)[-1] in _NORMS


def _tail_to_external(tuner_module: str, tail: str) -> str:
    return "weight" if _is_norm(tuner_module) and tail == "scale" else tail


def _tail_to_tuner(tuner_module: str, tail: str) -> str:
    return "scale" if _is_norm(tuner_module) and tail == "weight" else tail


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def tuner_module_path_to_hf(name: str, model_type: str) -> str:
    """HF module path of a tuner module path (``layers.0.attn.q_proj`` -> ``model.layers.0.self_attn.q_proj``).

    For Phi-3, q/k/v and w1/w3 are fused in HF (``qkv_proj``, ``gate_up_proj``) and have no HF module
    of their own: asking for them raises TunerError.
    """
    mt = normalize_model_type(model_type)
    hit = _hf_renamer(mt).to_external(name)
    if hit is None or hit[1]:
        raise TunerError(f"{name!r} is not a module path of a tuner {mt} model",
                         "pass a path such as 'layers.0.attn.q_proj'")
    if mt == "PHI3_MINI":
        _refuse_phi3_fused(hit[2], name)
    return hit[0]


def _refuse_phi3_fused(tuner_module: str, name: str) -> None:
    sub = tuner_module.split(".", 2)[-1] if tuner_module.startswith("layers.") else tuner_module
    if sub in _PHI3_FUSED:
        raise TunerError(
            f"{name!r} has no module of its own in Phi-3 HF checkpoints (fused into {_PHI3_FUSED[sub]})",
            "put adapters on output_proj / w2 only for a PEFT export of Phi-3, or merge them into the weights",
        )


def fused_in_hf(tuner_key: str, model_type: str) -> bool:
    """Whether the module of ``tuner_key`` has no HF module of its own (Phi-3 fuses q/k/v into
    ``qkv_proj`` and w1/w3 into ``gate_up_proj``), so an adapter on it has no PEFT form."""
    if normalize_model_type(model_type) != "PHI3_MINI":
        return False
    parts = clean_tuner_key(tuner_key).split(".")
    return any(".".join(parts[i:i + 2]) in _PHI3_FUSED for i in range(len(parts) - 1))


def _tied(mt: str, hf_config: Mapping[str, Any] | None) -> bool:
    default = mt == "GEMMA2"
    return bool((hf_config or {}).get("tie_word_embeddings", default))


def _dims(hf_config: Mapping[str, Any] | None) -> tuple[int, int, int]:
    c = hf_config or {}
    try:
        heads = int(c["num_attention_heads"])
        kv = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
    except KeyError as e:
        raise ConfigError(f"HF config lacks {e.args[0]!r}", "pass the checkpoint's config.json as hf_config") from None
    return heads, kv, head_dim


def hf_to_tuner(state_dict: Mapping[str, torch.Tensor], model_type: str,
                hf_config: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Convert an HF transformers state dict (weights or adapter weights) to tuner keys.

    ``hf_config`` is the checkpoint's config.json dict; it is needed for Phi-3 (to split the fused
    projections) and tells whether the embeddings are tied (then ``lm_head.weight`` is dropped).
    """
    mt = normalize_model_type(model_type)
    ren = _hf_renamer(mt)
    tied = _tied(mt, hf_config)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        if tied and key == "lm_head.weight":
            continue
        if mt == "PHI3_MINI" and (".self_attn.qkv_proj." in key or ".mlp.gate_up_proj." in key):
            out.update(_phi3_split(key, value, hf_config))
            continue
        hit = ren.to_tuner(key)
        if hit is None:
            raise TunerError(f"unexpected key {key!r} in a {mt} HF checkpoint",
                             "check that model_type matches the checkpoint")
        mod, tail = hit
        out[_join(mod, _tail_to_tuner(mod, tail))] = value
    return out


_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def clean_tuner_key(key: str) -> str:
    """Drop the names that activation checkpointing, torch.compile and FSDP1 wrappers add to keys."""
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


def tuner_to_hf(state_dict: Mapping[str, torch.Tensor], model_type: str,
                hf_config: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Convert a tuner state dict (weights or adapter weights) to HF transformers keys.

    Wrapper names (activation checkpointing, ``torch.compile``) in the keys are dropped first.
    """
    mt = normalize_model_type(model_type)
    ren = _hf_renamer(mt)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        key = clean_tuner_key(key)
        hit = ren.to_external(key)
        if hit is None:
            raise TunerError(f"unexpected key {key!r} in a tuner {mt} state dict",
                             "check that model_type matches the model")
        hf_mod, tail, mod = hit
        if mt == "PHI3_MINI":
            sub = mod.split(".", 2)[-1] if mod.startswith("layers.") else mod
            if sub in _PHI3_FUSED:
                if tail != "weight":
                    _refuse_phi3_fused(mod, key)
                fused_mod = hf_mod.rsplit(".", 2)[0] + "." + _PHI3_FUSED[sub]
                fused.setdefault(fused_mod, {})[sub] = value
                continue
        out[_join(hf_mod, _tail_to_external(mod, tail))] = value
    for hf_mod, parts in fused.items():
        order = ("attn.q_proj", "attn.k_proj", "attn.v_proj") if hf_mod.endswith("qkv_proj") else ("mlp.w1", "mlp.w3")
        missing = [p for p in order if p not in parts]
        if missing:
            raise TunerError(f"cannot fuse {hf_mod}: missing {missing}", "convert a complete state dict")
        out[f"{hf_mod}.weight"] = torch.cat([parts[p] for p in order], dim=0)
    return out


def _phi3_split(key: str, value: torch.Tensor, hf_config: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    m = re.match(r"model\.layers\.(\d+)\.(self_attn\.qkv_proj|mlp\.gate_up_proj)\.(.*)$", key)
    if m is None or m.group(3) != "weight":
        raise TunerError(f"cannot split Phi-3 key {key!r}: only fused weights are supported",
                         "merge adapters on qkv_proj / gate_up_proj into the weights first")
    i = m.group(1)
    if m.group(2) == "mlp.gate_up_proj":
        gate, up = value.chunk(2, dim=0)
        return {f"layers.{i}.mlp.w1.weight": gate, f"layers.{i}.mlp.w3.weight": up}
    heads, kv, hd = _dims(hf_config)
    q, k, v = value.split([heads * hd, kv * hd, kv * hd], dim=0)
    return {f"layers.{i}.attn.q_proj.weight": q, f"layers.{i}.attn.k_proj.weight": k,
            f"layers.{i}.attn.v_proj.weight": v}


# ---- Meta (original Llama) layout --------------------------------------------------------------
_ROW_TAILS = ("weight", "bias", "lora_b.weight", "magnitude")


def _meta_to_half(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows from Meta's interleaved rotary layout to HF's rotate-half layout (per head)."""
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(n_heads * head_dim, *rest)


def _half_to_meta(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of ``_meta_to_half``."""
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(n_heads * head_dim, *rest)


def _permute_heads(mod: str, tail: str, value: torch.Tensor, num_heads: int, num_kv_heads: int,
                   head_dim: int, fn) -> torch.Tensor:
    if tail not in _ROW_TAILS:
        return value
    if mod.endswith("attn.q_proj"):
        return fn(value, num_heads, head_dim)
    if mod.endswith("attn.k_proj"):
        return fn(value, num_kv_heads, head_dim)
    return value


def meta_to_tuner(state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int, dim: int,
                  head_dim: int | None = None) -> dict[str, torch.Tensor]:
    """Convert a Meta (``consolidated.00.pth``) Llama state dict to tuner keys, permuting q/k rows."""
    head_dim = head_dim or dim // num_heads
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "rope.freqs":
            continue
        hit = _META_RENAMER.to_tuner(key)
        if hit is None:
            raise TunerError(f"unexpected key {key!r} in a Meta Llama checkpoint", "use a Meta-format checkpoint")
        mod, tail = hit
        value = _permute_heads(mod, tail, value, num_heads, num_kv_heads, head_dim, _meta_to_half)
        out[_join(mod, _tail_to_tuner(mod, tail))] = value
    return out


def tuner_to_meta(state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int, dim: int,
                  head_dim: int | None = None) -> dict[str, torch.Tensor]:
    """Convert a tuner Llama state dict to Meta's keys and interleaved rotary layout."""
    head_dim = head_dim or dim // num_heads
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = clean_tuner_key(key)
        hit = _META_RENAMER.to_external(key)
        if hit is None:
            raise TunerError(f"unexpected key {key!r} in a tuner Llama state dict", "convert a Llama model")
        meta_mod, tail, mod = hit
        value = _permute_heads(mod, tail, value, num_heads, num_kv_heads, head_dim, _half_to_meta)
        out[_join(meta_mod, _tail_to_external(mod, tail))] = value
    return out


# ---- building a model from an HF config ---------------------------------------------------------
def _rope(c: Mapping[str, Any]) -> tuple[float, dict[str, Any] | None]:
    params = c.get("rope_parameters") or {}
    theta = c.get("rope_theta", params.get("rope_theta", 10_000.0))
    scaling = c.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind in (None, "default"):
            scaling = None
        elif kind != "llama3":
            raise ConfigError(f"rope scaling {kind!r} is not supported", "use a checkpoint with plain or 'llama3' RoPE")
    return float(theta), scaling


def builder_kwargs_from_hf_config(hf_config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """The tuner component builder and its kwargs for an HF ``config.json`` dict.

    Returns ``{"_component_": "tuner.models.<family>.<builder>", **kwargs}``, ready for
    ``tuner.config.instantiate`` or ``build_model_from_hf_config``.
    """
    mt = normalize_model_type(model_type)
    c = dict(hf_config)
    heads, kv, head_dim = _dims(c)
    theta, scaling = _rope(c)
    try:
        kw: dict[str, Any] = dict(
            vocab_size=int(c["vocab_size"]), num_layers=int(c["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=kv, embed_dim=int(c["hidden_size"]), intermediate_dim=int(c["intermediate_size"]),
            max_seq_len=int(c.get("max_position_embeddings", 4096)), norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_base=theta,
        )
    except KeyError as e:
        raise ConfigError(f"HF config lacks {e.args[0]!r}", "pass the checkpoint's config.json as hf_config") from None
    act = c.get("hidden_activation") or c.get("hidden_act") or ("gelu_pytorch_tanh" if mt == "GEMMA2" else "silu")
    want_act = "gelu_pytorch_tanh" if mt == "GEMMA2" else "silu"
    if act != want_act:
        raise ConfigError(f"{mt} checkpoints with hidden_act {act!r} are not supported", f"expected {want_act!r}")
    if scaling and mt not in ("LLAMA3", "LLAMA3_2"):
        raise ConfigError(f"{mt} checkpoints with rope scaling are not supported",
                          "use a checkpoint without rope_scaling")
    tied = _tied(mt, c)
    default_head_dim = kw["embed_dim"] // heads
    if head_dim != default_head_dim and mt not in ("MISTRAL", "QWEN2", "GEMMA2"):
        raise ConfigError(f"{mt} with head_dim {head_dim} != hidden_size/num_heads is not supported",
                          "check the config")

    def scale_kw() -> dict[str, Any]:
        return dict(scale_factor=float(scaling["factor"]),
                    low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
                    high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
                    old_context_len=int(scaling.get("original_max_position_embeddings", 8192)))

    if mt == "LLAMA2":
        return {"_component_": "tuner.models.llama2.llama2", **kw, "tie_word_embeddings": tied}
    if mt in ("LLAMA3", "LLAMA3_2"):
        if not scaling:
            return {"_component_": "tuner.models.llama3.llama3", **kw, "tie_word_embeddings": tied}
        comp = "tuner.models.llama3_2.llama3_2" if mt == "LLAMA3_2" else "tuner.models.llama3_1.llama3_1"
        return {"_component_": comp, **kw, **scale_kw(), "tie_word_embeddings": tied}
    if mt == "SMOLLM2":
        return {"_component_": "tuner.models.smollm2.smollm2", **kw, "tie_word_embeddings": tied}
    if mt == "MISTRAL":
        return {"_component_": "tuner.models.mistral.mistral", **kw, "head_dim": head_dim,
                "sliding_window": c.get("sliding_window"), "tie_word_embeddings": tied}
    if mt == "PHI3_MINI":
        if c.get("partial_rotary_factor", (c.get("rope_parameters") or {}).get("partial_rotary_factor", 1.0)) != 1.0:
            raise ConfigError("Phi-3 with partial_rotary_factor != 1 is not supported", "use Phi-3-mini")
        return {"_component_": "tuner.models.phi3.phi3", **kw, "sliding_window": c.get("sliding_window"),
                "tie_word_embeddings": tied}
    if mt == "QWEN2":
        if c.get("use_sliding_window"):
            raise ConfigError("Qwen2 with use_sliding_window=true is not supported", "set use_sliding_window false")
        return {"_component_": "tuner.models.qwen2_5.qwen2_5", **kw, "head_dim": head_dim,
                "tie_word_embeddings": tied}
    # GEMMA2
    layer_types = c.get("layer_types")
    expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(kw["num_layers"])]
    if layer_types is not None and list(layer_types) != expected:
        raise ConfigError("Gemma 2 config with a non-alternating layer_types is not supported",
                          "use sliding attention on even layers, as released Gemma 2 models do")
    if not tied:
        raise ConfigError("Gemma 2 with untied embeddings is not supported", "set tie_word_embeddings true")
    return {"_component_": "tuner.models.gemma2.gemma2", **kw, "head_dim": head_dim,
            "hidden_capping_value": c.get("attn_logit_softcapping"),
            "final_capping_value": c.get("final_logit_softcapping"),
            "sliding_window_size": c.get("sliding_window"),
            "query_pre_attn_scalar": c.get("query_pre_attn_scalar", head_dim)}


def build_model_from_hf_config(hf_config: Mapping[str, Any], model_type: str):
    """Build the (randomly initialised) tuner model matching an HF ``config.json`` dict."""
    kwargs = builder_kwargs_from_hf_config(hf_config, model_type)
    module, _, fn = kwargs.pop("_component_").rpartition(".")
    return getattr(importlib.import_module(module), fn)(**kwargs)


_HF_ARCH = {
    "LLAMA2": ("LlamaForCausalLM", "llama"), "LLAMA3": ("LlamaForCausalLM", "llama"),
    "LLAMA3_2": ("LlamaForCausalLM", "llama"), "SMOLLM2": ("LlamaForCausalLM", "llama"),
    "MISTRAL": ("MistralForCausalLM", "mistral"), "QWEN2": ("Qwen2ForCausalLM", "qwen2"),
    "GEMMA2": ("Gemma2ForCausalLM", "gemma2"), "PHI3_MINI": ("Phi3ForCausalLM", "phi3"),
}


def _out_features(module: torch.nn.Module) -> int:
    for name in ("out_features", "out_dim"):
        if isinstance(getattr(module, name, None), int):
            return getattr(module, name)
    return int(module.weight.shape[0])


def hf_config_from_model(model, model_type: str, **extra: Any) -> dict[str, Any]:
    """An HF ``config.json`` dict describing ``model`` (a tuner ``TransformerDecoder``).

    For writing an HF folder when no source config.json exists (e.g. weights that came in Meta's
    format); when one exists, copying it keeps every field (token ids, generation settings) intact.
    ``extra`` fields (``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ...) are added as given.
    """
    mt = normalize_model_type(model_type)
    arch, hf_type = _HF_ARCH[mt]
    layer = model.layers[0]
    attn = layer.attn
    embed_dim = model.tok_embeddings.embedding_dim
    rope = model.rope
    dtype = model.tok_embeddings.weight.dtype
    cfg: dict[str, Any] = {
        "architectures": [arch],
        "model_type": hf_type,
        "vocab_size": model.tok_embeddings.num_embeddings,
        "hidden_size": embed_dim,
        "intermediate_size": _out_features(layer.mlp.w1),
        "num_hidden_layers": len(model.layers),
        "num_attention_heads": attn.num_heads,
        "num_key_value_heads": attn.num_kv_heads,
        "head_dim": attn.head_dim,
        "max_position_embeddings": model.max_seq_len,
        "rms_norm_eps": model.norm.eps,
        "rope_theta": float(rope.base),
        "rope_scaling": dict(rope.scaling) if rope.scaling else None,
        "tie_word_embeddings": model.tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "attention_dropout": attn.attn_dropout,
    }
    if mt == "GEMMA2":
        window = next((lay.attn.sliding_window for lay in model.layers if lay.attn.sliding_window), None)
        cfg.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=int(round(attn.scale**-2)),
                   attn_logit_softcapping=attn.softcap, final_logit_softcapping=model.final_softcap,
                   sliding_window=window)
    else:
        cfg["hidden_act"] = "silu"
    if hf_type == "llama":
        cfg.update(attention_bias=False, mlp_bias=False)
    if mt in ("MISTRAL", "PHI3_MINI"):
        cfg["sliding_window"] = attn.sliding_window
    if mt == "PHI3_MINI":
        cfg["original_max_position_embeddings"] = model.max_seq_len
    if mt == "QWEN2":
        cfg.update(use_sliding_window=False, sliding_window=None)
    cfg.update(extra)
    return cfg
