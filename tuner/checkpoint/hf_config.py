"""A tuner model from an HF ``config.json`` dict, and a ``config.json`` dict from a tuner model.

Both are generic over the family registry: every family's component builder takes the common
dimensions; the decoder settings a builder exposes (``head_dim``, a sliding window, soft-capping,
Llama 3.1's rope scaling, tied embeddings) are read from and written to the config.json keys in
``HF_FIELDS``; what a builder fixes is checked (activation), and the family's own checks
(``check_hf_config``) and extra fields (``hf_extra``) come from its spec.
"""

from __future__ import annotations

from typing import Any, Mapping

from tuner.checkpoint.hf_keys import hf_dims, tied_embeddings
from tuner.errors import ConfigError
from tuner.models._builder import LLAMA3_SCALING
from tuner.models.families import families, family, same_checkpoints
from tuner.models.spec import FamilySpec
from tuner.models.transformer import TransformerDecoder

#: decoder settings a family's builder may expose -> their config.json keys
HF_FIELDS = {
    "head_dim": "head_dim",
    "sliding_window": "sliding_window",
    "attn_softcap": "attn_logit_softcapping",
    "final_softcap": "final_logit_softcapping",
    "query_pre_attn_scalar": "query_pre_attn_scalar",
    "tie_word_embeddings": "tie_word_embeddings",
}


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


def _takes_rope_scaling(spec: FamilySpec) -> bool:
    return all(arg in spec.arguments for arg in LLAMA3_SCALING)


def _with_rope_scaling(spec: FamilySpec, scaling: bool) -> FamilySpec:
    """The family of ``spec``'s checkpoints whose builder takes rope scaling exactly when ``scaling``
    (Llama 3 with scaling is a Llama 3.1 model)."""
    for candidate in same_checkpoints(spec):
        if _takes_rope_scaling(candidate) == scaling:
            return candidate
    if scaling:
        raise ConfigError(
            f"{spec.model_type} checkpoints with rope scaling are not supported",
            "use a checkpoint without rope_scaling",
        )
    plain = sorted(
        {f.model_type for f in families() if f.hf_model_type == spec.hf_model_type and not _takes_rope_scaling(f)}
    )
    raise ConfigError(
        f"{spec.model_type} checkpoints without 'llama3' rope scaling are not supported",
        f"use model_type {' / '.join(plain) or 'of another family'} for such a checkpoint",
    )


def _builder_kwargs(hf_config: Mapping[str, Any], model_type: str) -> tuple[FamilySpec, dict[str, Any]]:
    spec = family(model_type)
    c = dict(hf_config)
    heads, kv, head_dim = hf_dims(c)
    theta, scaling = _rope(c)
    try:
        kw: dict[str, Any] = dict(
            vocab_size=int(c["vocab_size"]),
            num_layers=int(c["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=kv,
            embed_dim=int(c["hidden_size"]),
            intermediate_dim=int(c["intermediate_size"]),
            max_seq_len=int(c.get("max_position_embeddings", 4096)),
            norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_base=theta,
        )
    except KeyError as e:
        raise ConfigError(f"HF config lacks {e.args[0]!r}", "pass the checkpoint's config.json as hf_config") from None
    want_act = spec.decoder.get("activation", "silu")
    act = c.get("hidden_activation") or c.get("hidden_act") or want_act
    if act != want_act:
        raise ConfigError(
            f"{spec.model_type} checkpoints with hidden_act {act!r} are not supported", f"expected {want_act!r}"
        )
    spec = _with_rope_scaling(spec, bool(scaling))
    if spec.check_hf_config is not None:
        spec.check_hf_config(c)
    exposed = {spec.renames.get(arg, arg): arg for arg in spec.arguments}
    if "head_dim" not in exposed and head_dim != kw["embed_dim"] // heads:
        raise ConfigError(
            f"{spec.model_type} with head_dim {head_dim} != hidden_size/num_heads is not supported", "check the config"
        )
    read = {"head_dim": head_dim, "tie_word_embeddings": tied_embeddings(spec, c)}
    for setting, key in HF_FIELDS.items():
        if setting in exposed:
            kw[exposed[setting]] = read[setting] if setting in read else c.get(key)
    if scaling:
        if "factor" not in scaling:
            raise ConfigError(
                "the config's 'llama3' rope_scaling has no factor", "use the checkpoint's own config.json"
            )
        kw.update(
            {arg: type(spec.defaults[arg])(scaling.get(key, spec.defaults[arg])) for arg, key in LLAMA3_SCALING.items()}
        )
    return spec, kw


def builder_kwargs_from_hf_config(hf_config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """The tuner component builder and its kwargs for an HF ``config.json`` dict.

    Returns ``{"_component_": "tuner.models.<family>.<builder>", **kwargs}``, ready for
    ``tuner.config.instantiate`` or ``build_model_from_hf_config``. ``model_type`` is any model
    type or alias the checkpointers accept.
    """
    spec, kw = _builder_kwargs(hf_config, model_type)
    return {"_component_": spec.component_path, **kw}


def build_model_from_hf_config(hf_config: Mapping[str, Any], model_type: str) -> TransformerDecoder:
    """Build the (randomly initialised) tuner model matching an HF ``config.json`` dict."""
    spec, kw = _builder_kwargs(hf_config, model_type)
    return spec.builders[spec.name](**kw)


def hf_config_from_model(model: TransformerDecoder, model_type: str, **extra: Any) -> dict[str, Any]:
    """An HF ``config.json`` dict describing ``model`` (a tuner ``TransformerDecoder``).

    For writing an HF folder when no source config.json exists (e.g. weights that came in Meta's
    format); when one exists, copying it keeps every field (token ids, generation settings) intact.
    ``extra`` fields (``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ...) are added as given.
    """
    spec = family(model_type)
    layer = model.layers[0]
    attn = layer.attn
    rope = model.rope
    cfg: dict[str, Any] = {
        "architectures": [spec.hf_architecture],
        "model_type": spec.hf_model_type,
        "vocab_size": model.tok_embeddings.num_embeddings,
        "hidden_size": model.tok_embeddings.embedding_dim,
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
        "torch_dtype": str(model.tok_embeddings.weight.dtype).removeprefix("torch."),
        "attention_dropout": attn.attn_dropout,
        "hidden_act": layer.mlp.act_name,
        "attention_bias": getattr(attn.q_proj, "bias", None) is not None,
        "mlp_bias": False,
        "sliding_window": next((lay.attn.sliding_window for lay in model.layers if lay.attn.sliding_window), None),
    }
    exposed = {spec.renames.get(arg, arg) for arg in spec.arguments}
    written = {
        "attn_softcap": attn.softcap,
        "final_softcap": model.final_softcap,
        "query_pre_attn_scalar": int(round(attn.scale**-2)),
    }
    cfg.update({HF_FIELDS[k]: v for k, v in written.items() if k in exposed})
    cfg.update({k: v(cfg) if callable(v) else v for k, v in spec.hf_extra.items()})
    cfg.update(extra)
    return cfg


def _out_features(module: Any) -> int:
    for name in ("out_features", "out_dim"):
        if isinstance(getattr(module, name, None), int):
            return getattr(module, name)
    return int(module.weight.shape[0])
