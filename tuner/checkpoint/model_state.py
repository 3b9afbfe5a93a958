"""Load a state dict into a model with an error a person can act on.

torch's own ``load_state_dict`` error is a wall of key names; `load_model_state` says what is
missing, what is unexpected and which shapes differ (first few of each, with counts) and names the
likely cause: a model builder that does not match the checkpoint, the wrong ``model_type``, or a
``checkpoint_dir`` that holds another model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch
from torch import nn

from tuner.errors import CheckpointError
from tuner.quantization import FP8_BUFFERS

_SHOW = 5
#: State-dict entries of an NF4- or FP8-quantized weight (tuner.quantization); a dense
#: ``<prefix>weight`` from a checkpoint fills them through the module's load hook.
_QUANTIZED_BUFFERS = ("weight_nf4", "weight_absmax", "weight_absmax_scale", "weight_absmax_offset", *FP8_BUFFERS)


def _quantized_prefix(key: str) -> str | None:
    for name in _QUANTIZED_BUFFERS:
        if key.endswith(name) and (len(key) == len(name) or key[-len(name) - 1] == "."):
            return key[: -len(name)]
    return None


class LoadResult(NamedTuple):
    """Keys left out of a non-strict load (same fields as torch's ``_IncompatibleKeys``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOW else shown


def _plain_shape(t: object) -> tuple[int, ...] | None:
    """The shape to compare, or None for tensors whose storage shape is not the logical one (NF4)."""
    if not isinstance(t, torch.Tensor) or type(t) not in (torch.Tensor, nn.Parameter):
        return None
    return tuple(t.shape)


def check_state_dict(
    model: nn.Module | Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    strict: bool = True,
    ignore_missing: Iterable[str] = (),
    check_missing: bool = True,
    subject: str = "checkpoint",
    cause: str | None = None,
    fix: str | None = None,
) -> LoadResult:
    """Compare ``state_dict`` to ``model``'s (a module or its state dict); raise a CheckpointError
    on a mismatch.

    Shape mismatches always raise; missing / unexpected keys raise when ``strict``. Keys that
    contain any of the ``ignore_missing`` substrings may be missing (e.g. ``"lora_"`` when loading a
    base checkpoint into a LoRA model). ``check_missing=False`` checks one shard of many.
    ``subject``, ``cause`` and ``fix`` replace the message's wording for other state (an adapter).
    """
    own = model.state_dict() if isinstance(model, nn.Module) else model
    ignore = tuple(ignore_missing)
    quantized_dense = {p + "weight" for k in own if (p := _quantized_prefix(k)) is not None}
    missing = [
        k
        for k in own
        if check_missing
        and k not in state_dict
        and not any(s in k for s in ignore)
        and not ((p := _quantized_prefix(k)) is not None and p + "weight" in state_dict)
    ]
    unexpected = [k for k in state_dict if k not in own and k not in quantized_dense]
    shapes = []
    for k, v in state_dict.items():
        if k in own:
            a, b = _plain_shape(v), _plain_shape(own[k])
            if a is not None and b is not None and a != b:
                shapes.append(f"{k}: {subject} {list(a)} vs model {list(b)}")
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_few(shapes)}")
    if strict and missing:
        problems.append(f"{len(missing)} key(s) the model needs are missing from the {subject}: {_few(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} {subject} key(s) the model does not have: {_few(unexpected)}")
    if problems:
        cause = cause or _likely_cause(missing, unexpected, shapes, len(own), len(state_dict))
        raise CheckpointError(
            f"the {subject} does not fit the model: {'; '.join(problems)}. Likely cause: {cause}",
            fix=fix
            or "use the model builder for the checkpoint's size and family, the matching checkpointer.model_type, "
            "and a checkpointer.checkpoint_dir that holds that model",
        )
    return LoadResult(missing, unexpected)


def _likely_cause(missing: list[str], unexpected: list[str], shapes: list[str], n_model: int, n_ckpt: int) -> str:
    if unexpected and any(k.startswith(("model.", "lm_head", "transformer.")) for k in unexpected):
        return (
            "the keys are still in Hugging Face layout: the wrong checkpointer or model_type (key conversion did "
            "not run)"
        )
    if shapes:
        return (
            "the model builder has other dimensions than the checkpoint (wrong size, e.g. a 1B builder for a 3B "
            "checkpoint)"
        )
    if missing and unexpected:
        return "the model builder is of another family than the checkpoint (wrong builder or model_type)"
    if missing and all(".layers." in k or k.startswith("layers.") for k in missing):
        return (
            "the model has more layers than the checkpoint (wrong model size, or checkpoint_files lists too few shards)"
        )
    if missing:
        return (
            "the checkpoint is incomplete (a shard missing from checkpoint_files) or the builder is not the "
            "checkpoint's"
        )
    if unexpected:
        return "the checkpoint has more layers or modules than the model (wrong model size or builder)"
    return "the model builder does not match the checkpoint"


def load_model_state(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    strict: bool = True,
    ignore_missing: Iterable[str] = (),
    assign: bool | None = None,
) -> LoadResult:
    """``model.load_state_dict`` with a readable CheckpointError on a mismatch.

    ``assign`` defaults to True when the model still has parameters on the meta device (built
    with ``torch.device("meta")``), so the checkpoint's tensors become the parameters.
    """
    result = check_state_dict(model, state_dict, strict=strict, ignore_missing=ignore_missing)
    if assign is None:
        assign = any(p.is_meta for p in model.parameters())
    model.load_state_dict(dict(state_dict), strict=False, assign=assign)
    return result
