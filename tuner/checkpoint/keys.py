"""Renaming state-dict keys between tuner's module paths and another layout's (HF, Meta).

Renaming works on module paths; whatever follows the module path (``weight``, ``bias``,
``lora_a.weight``, ``lora_b.weight``, ``magnitude``, quantisation state, ...) passes through, except
that norms' ``scale`` is HF's/Meta's ``weight``. So adapter keys convert with the same function:
``layers.0.attn.q_proj.lora_a.weight`` <-> ``model.layers.0.self_attn.q_proj.lora_a.weight``.
"""

from __future__ import annotations

import re
from typing import Mapping

#: tuner module names (the last part of a path) of RMSNorms: their ``scale`` is the other layouts' ``weight``.
NORMS = {"sa_norm", "mlp_norm", "sa_scale", "mlp_scale", "norm", "q_norm", "k_norm"}

_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def clean_tuner_key(key: str) -> str:
    """Drop the names that activation checkpointing, torch.compile and FSDP1 wrappers add to keys."""
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


class Renamer:
    """Bidirectional module-path renaming for one checkpoint layout.

    ``top``: tuner -> external module paths outside the layers; ``layer``: tuner -> external module
    paths inside layer ``i``, which the external layout puts under ``{layer_prefix}{i}.``.
    """

    def __init__(self, top: Mapping[str, str], layer: Mapping[str, str], layer_prefix: str) -> None:
        self.top, self.layer, self.layer_prefix = dict(top), dict(layer), layer_prefix
        self.top_inv = {v: k for k, v in self.top.items()}
        self.layer_inv = {v: k for k, v in self.layer.items()}

    @staticmethod
    def _split(rest: str, table: Mapping[str, str]) -> tuple[str, str] | None:
        for mod in sorted(table, key=len, reverse=True):
            if rest == mod or rest.startswith(mod + "."):
                return mod, rest[len(mod) + 1 :]
        return None

    def _rename(
        self, key: str, layers_in: str, layers_out: str, layer: Mapping[str, str], top: Mapping[str, str]
    ) -> tuple[str, str, str] | None:
        m = re.match(rf"{re.escape(layers_in)}(\d+)\.(.*)$", key)
        prefix_in, prefix_out, table, rest = (
            (f"{layers_in}{m.group(1)}.", f"{layers_out}{m.group(1)}.", layer, m.group(2)) if m else ("", "", top, key)
        )
        hit = self._split(rest, table)
        if hit is None:
            return None
        mod, tail = hit
        return prefix_out + table[mod], tail, prefix_in + mod

    def to_external(self, key: str) -> tuple[str, str, str] | None:
        """tuner key -> (external module path, tail, tuner module path), or None if unknown."""
        return self._rename(key, "layers.", self.layer_prefix, self.layer, self.top)

    def to_tuner(self, key: str) -> tuple[str, str] | None:
        """external key -> (tuner module path, tail), or None if unknown."""
        hit = self._rename(key, self.layer_prefix, "layers.", self.layer_inv, self.top_inv)
        return None if hit is None else hit[:2]


def _is_norm(tuner_module: str) -> bool:
    return tuner_module.rsplit(".", 1)[-1] in NORMS


def tail_to_external(tuner_module: str, tail: str) -> str:
    """The key tail after an external module path (a norm's ``scale`` is ``weight``)."""
    return "weight" if _is_norm(tuner_module) and tail == "scale" else tail


def tail_to_tuner(tuner_module: str, tail: str) -> str:
    """The key tail after a tuner module path (a norm's ``weight`` is ``scale``)."""
    return "scale" if _is_norm(tuner_module) and tail == "weight" else tail


def join(*parts: str) -> str:
    """Dotted path of the non-empty parts."""
    return ".".join(p for p in parts if p)


def layer_module(tuner_module: str) -> str:
    """``layers.3.attn.q_proj`` -> ``attn.q_proj``; a top-level path stays as it is."""
    return tuner_module.split(".", 2)[-1] if tuner_module.startswith("layers.") else tuner_module
