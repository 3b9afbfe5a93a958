"""Quantize-as-load: fill a (meta-built) model from dense tensors one at a time.

A QLoRA model is built on the meta device (no memory), then each checkpoint tensor is moved to
the target device, loaded with ``assign=True`` and, if it is the dense weight of an NF4 module,
quantized right away by that module's load hook. Peak memory is the quantized model plus one
dense tensor: neither host nor GPU ever holds the whole bf16 model (given a lazy source, e.g. a
generator over safetensors shards).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple, Union

import torch
from torch import nn

from tuner.errors import CheckpointError

Tensors = Union[Mapping[str, torch.Tensor], Iterable[Mapping[str, torch.Tensor]], Iterable[tuple[str, torch.Tensor]]]


class LoadResult(NamedTuple):
    missing_keys: list[str]  # model keys no tensor was given for
    unexpected_keys: list[str]  # given keys the model has no place for


def _items(tensors: Tensors) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs from a state dict, an iterable of state dicts (shards), or of pairs."""
    if isinstance(tensors, Mapping):
        tensors = [tensors]
    for item in tensors:
        if isinstance(item, Mapping):
            for key in list(item.keys()):
                yield key, item[key]
        else:
            yield item
        del item  # hold no reference to the previous tensor while fetching the next


def quantize_state_dict_into(
    model: nn.Module,
    tensors: Tensors,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
) -> LoadResult:
    """Load `tensors` into `model` one at a time, quantizing dense weights of NF4 modules.

    `tensors` is a state dict with the model's keys, an iterable of such dicts (shards), or an
    iterable of (key, tensor) pairs (a generator keeps at most one dense tensor alive). Each
    tensor is moved to `device` (default: where it is) and, if floating and `dtype` is given,
    cast to `dtype`, then assigned (``assign=True``), so parameters still on the meta device
    become real. With `strict`, a missing or unexpected key raises a CheckpointError; otherwise
    they are returned (LoRA adapters, for instance, are expected to be missing from a base
    checkpoint).
    """
    expected = set(model.state_dict().keys())
    loaded: set[str] = set()
    unexpected: list[str] = []
    for key, tensor in _items(tensors):
        tensor = tensor.to(
            device=device or tensor.device,
            dtype=dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype,
        )
        # Loaded into the module that owns the key: a whole-model load_state_dict per tensor walks
        # every module each time (~1.4 s for SmolLM2-135M's 272 tensors).
        prefix, _, name = key.rpartition(".")
        try:
            owner = model.get_submodule(prefix)
        except AttributeError:
            unexpected.append(key)
            continue
        owned = [f"{prefix}.{k}" if prefix else k for k in owner.state_dict()]
        try:
            result = owner.load_state_dict({name: tensor}, strict=False, assign=True)
        except RuntimeError as e:  # shape mismatch of a dense tensor
            detail = str(e).strip().splitlines()[-1].strip().rstrip(".")
            detail = detail.replace(f"for {name}:", f"for {key}:")
            raise CheckpointError(detail, fix="check that the model config matches the checkpoint") from None
        del tensor
        if result.unexpected_keys:
            unexpected.append(key)
        else:  # a dense NF4 weight fills its module's four buffers
            still_missing = {f"{prefix}.{k}" if prefix else k for k in result.missing_keys}
            loaded |= set(owned) - still_missing
    missing = sorted(expected - loaded)
    if strict and (missing or unexpected):
        parts = [
            f"missing {len(missing)} key(s) {missing[:5]}" if missing else "",
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}" if unexpected else "",
        ]
        raise CheckpointError(
            "checkpoint does not fit the model: " + "; ".join(p for p in parts if p),
            fix="check the model builder and checkpoint files (or pass strict=False to load a partial checkpoint)",
        )
    return LoadResult(missing, unexpected)
