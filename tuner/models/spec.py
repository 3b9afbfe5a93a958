"""One declared spec per model family, and the builders generated from it.

A family module (``tuner/models/<family>.py``) holds one ``FAMILY = FamilySpec(...)`` and then
``globals().update(FAMILY.builders)``. The spec is everything tuner knows about the family:

* names: ``model_type`` (torchtune's checkpointer name, e.g. ``LLAMA3``) and ``aliases``
  (``LLAMA3_1``), the HF ``config.json`` ``model_type`` / architecture class, Meta format or not;
* the component builder: its arguments (``required`` then ``defaults``, in signature order, as
  torchtune names them), the decoder settings the family fixes (``decoder``: norms, activation,
  biases, soft-capping, ...), argument renames and ``derive`` steps into
  `tuner.models._builder.transformer_decoder`'s arguments;
* checkpoint facts the HF conversions read (`tuner.checkpoint.hf_keys`, `tuner.checkpoint.hf_config`):
  extra or fused HF module names, config.json checks and extra fields;
* its tokenizer builder and chat format, and its sizes as data (``Size``: dimensions, the released
  checkpoint's title, parameter count, HF repo and number of weight files).

``builders`` generates, with real signatures: the component builder ``<family>(vocab_size, ...)``,
one builder per size ``<family>_<size>()``, and ``lora_`` / ``qlora_`` versions of each
(`make_lora_builder`). Families are looked up in `tuner.models.families`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence

from tuner.models._builder import make_lora_builder, transformer_decoder
from tuner.models.transformer import TransformerDecoder

#: Types of the builder arguments families use (torchtune's names); a ``None`` default makes one optional.
#: An argument not listed takes the type of its default.
ARG_TYPES: dict[str, type] = {
    "vocab_size": int,
    "num_layers": int,
    "num_heads": int,
    "num_kv_heads": int,
    "embed_dim": int,
    "intermediate_dim": int,
    "max_seq_len": int,
    "head_dim": int,
    "attn_dropout": float,
    "norm_eps": float,
    "rope_base": float,
    "tie_word_embeddings": bool,
    "qkv_bias": bool,
    "sliding_window": int,
    "sliding_window_size": int | None,
    "hidden_capping_value": float | None,
    "final_capping_value": float | None,
    "query_pre_attn_scalar": float,
    "scale_factor": float,
    "low_freq_factor": float,
    "high_freq_factor": float,
    "old_context_len": int,
}


#: The component builder arguments without a default that most of torchtune's families take, in its order.
REQUIRED_DIMS = (
    "vocab_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "embed_dim",
    "intermediate_dim",
    "max_seq_len",
)


@dataclass(frozen=True, eq=False)
class Size:
    """One released size of a family (a litgpt-style row): the component builder's arguments plus
    what a config needs to download it."""

    name: str  # builder suffix: "1b" gives llama3_2_1b
    title: str  # the released checkpoint, e.g. "Llama 3.2 1B Instruct"
    dims: Mapping[str, Any]  # component builder arguments
    params: int | None = None  # published parameter count
    hf_repo: str | None = None  # HF Hub repo the configs download
    shards: int = 1  # safetensors files in that repo

    @classmethod
    def table(cls, columns: Sequence[str], *rows: Sequence[Any], **common: Any) -> tuple[Size, ...]:
        """Sizes written as a table, one row per released size: ``columns`` names the cells of every
        row; ``name``, ``title``, ``params``, ``hf_repo`` and ``shards`` are the `Size` fields, any other
        name a component builder argument (a ``dims`` entry). ``common`` are builder arguments every
        row shares (``vocab_size=128_256``), stated once."""
        fields = {"name", "title", "params", "hf_repo", "shards"}
        sizes = []
        for row in rows:
            if len(row) != len(columns):
                raise TypeError(f"size row {row!r} has {len(row)} cells for {len(columns)} columns {columns!r}")
            cells = dict(zip(columns, row))
            dims = {**common, **{k: v for k, v in cells.items() if k not in fields}}
            sizes.append(cls(dims=dims, **{k: v for k, v in cells.items() if k in fields}))
        return tuple(sizes)


@dataclass(frozen=True, eq=False, kw_only=True)
class FamilySpec:
    """Everything about one model family; see the module docstring. Specs compare by identity (the
    registry holds each once)."""

    name: str  # module name, component builder and builder prefix
    title: str  # e.g. "Llama 3.2" (messages and docstrings)
    model_type: str = ""  # canonical checkpointer model_type; default the name in capitals (torchtune's names)
    hf_model_type: str  # config.json "model_type"
    hf_architecture: str = ""  # config.json "architectures"[0]; default transformers' <Model>ForCausalLM name
    required: tuple[str, ...] = REQUIRED_DIMS  # component builder arguments without default, in order
    defaults: Mapping[str, Any]  # then these, in order
    sizes: tuple[Size, ...] = ()
    aliases: tuple[str, ...] = ()  # other model_type spellings that mean this family
    hf_reads: tuple[str, ...] = ()  # other config.json model_types its checkpoints may carry
    meta_format: bool = False  # MetaCheckpointer reads/writes it (Meta's original layout)
    decoder: Mapping[str, Any] = field(default_factory=dict)  # decoder settings the family fixes
    renames: Mapping[str, str] = field(default_factory=dict)  # builder argument -> decoder argument
    derive: tuple[Callable[[dict], dict], ...] = ()  # further builder -> decoder steps
    hf_layer_keys: Mapping[str, str] = field(default_factory=dict)  # tuner -> HF module names in a layer
    hf_fused: Mapping[str, str] = field(default_factory=dict)  # tuner module -> fused HF module holding it
    hf_extra: Mapping[str, Any] = field(default_factory=dict)  # config.json fields written (value or f(config))
    check_hf_config: Callable[[Mapping[str, Any]], None] | None = None  # raises ConfigError for what it cannot build
    tokenizer: str | None = None  # dotted path of the tokenizer builder (configs name it)
    tokenizer_file: str = "tokenizer.json"  # the tokenizer's file in the HF repo
    chat_format: type | None = None  # the chat format class its tokenizer renders with
    module: str = ""  # where the builders live (default tuner.models.<name>)

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", f"tuner.models.{self.name}")
        if not self.model_type:
            object.__setattr__(self, "model_type", self.name.upper())
        if not self.hf_architecture:
            object.__setattr__(self, "hf_architecture", f"{self.hf_model_type.capitalize()}ForCausalLM")
        for key in (*self.required, *self.defaults):
            if key not in ARG_TYPES and self.defaults.get(key) is None:
                raise TypeError(f"{self.name}: builder argument {key!r} has no type; add it to ARG_TYPES")
        overlap = set(self.decoder) & {self.renames.get(k, k) for k in (*self.required, *self.defaults)}
        if overlap:
            raise TypeError(f"{self.name}: {sorted(overlap)} are both fixed and builder arguments")

    def variant(self, **changes: Any) -> FamilySpec:
        """A family that is this one with ``changes`` (Llama 3.1 of Llama 3): its builders live in the
        module named after its own name unless ``module`` is given."""
        return replace(self, **{"module": "", **changes})

    # -- what the builders compute ---------------------------------------------------------------
    @property
    def component_path(self) -> str:
        """Dotted path of the component builder (``tuner.models.llama3_2.llama3_2``)."""
        return f"{self.module}.{self.name}"

    @property
    def arguments(self) -> tuple[str, ...]:
        """The component builder's arguments, in order."""
        return (*self.required, *self.defaults)

    @property
    def hf_tied_default(self) -> bool:
        """Tied embeddings when config.json does not say (as the HF config class defaults)."""
        return bool(self.decoder.get("tie_word_embeddings", False))

    def decoder_arguments(self, builder_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The ``transformer_decoder`` arguments for complete component builder arguments."""
        kw = {self.renames.get(k, k): v for k, v in builder_kwargs.items()}
        for step in self.derive:
            kw = step(kw)
        return {**kw, **self.decoder}

    def size(self, name: str) -> Size:
        """The size called ``name`` (``"1b"``)."""
        for s in self.sizes:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no size {name!r} (sizes: {', '.join(s.name for s in self.sizes)})")

    def size_arguments(self, size: Size) -> dict[str, Any]:
        """Complete component builder arguments of ``size`` (its dims over the defaults)."""
        return {**self.defaults, **size.dims}

    # -- the generated builders ------------------------------------------------------------------
    @cached_property
    def builders(self) -> dict[str, Callable[..., Any]]:
        """Every public builder of the family by name, generated from the data above."""
        component = self._component()
        out: dict[str, Callable[..., Any]] = {}
        for base in (component, *(self._size_builder(component, s) for s in self.sizes)):
            out[base.__name__] = base
            out["lora_" + base.__name__] = make_lora_builder(base)
            out["qlora_" + base.__name__] = make_lora_builder(base, quantize_base=True)
        return out

    def _component(self) -> Callable[..., TransformerDecoder]:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(n, kind, annotation=ARG_TYPES[n]) for n in self.required]
        for n, default in self.defaults.items():
            t = ARG_TYPES.get(n, type(default))
            params.append(inspect.Parameter(n, kind, default=default, annotation=t | None if default is None else t))
        sig = inspect.Signature(params, return_annotation=TransformerDecoder)

        def build(*args: Any, **kwargs: Any) -> TransformerDecoder:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return transformer_decoder(**self.decoder_arguments(bound.arguments))

        fixed = ", ".join(f"{k}={v!r}" for k, v in self.decoder.items())
        return _named(
            build,
            self.name,
            self.module,
            sig,
            f"{self.title} decoder of the given dimensions" + (f" (fixed: {fixed})." if fixed else "."),
        )

    def _size_builder(
        self, component: Callable[..., TransformerDecoder], size: Size
    ) -> Callable[[], TransformerDecoder]:
        """``<family>_<size>(max_seq_len=<the size's>)``: the one dimension a user may change is the
        longest sequence (the RoPE tables and the KV cache's default length; a long-context run asks
        for more than the released context, which RoPE extrapolates as the family's scaling says)."""
        default_len = self.size_arguments(size).get("max_seq_len")
        params = []
        if default_len is not None:
            params.append(
                inspect.Parameter("max_seq_len", inspect.Parameter.KEYWORD_ONLY, default=default_len, annotation=int)
            )

        def build(**kwargs: Any) -> TransformerDecoder:
            return component(**{**size.dims, **kwargs})

        count = f" ({size.params:,} parameters)" if size.params else ""
        return _named(
            build,
            f"{self.name}_{size.name}",
            self.module,
            inspect.Signature(params, return_annotation=TransformerDecoder),
            f"{size.title}{count}." + (f" ``max_seq_len``: positions (default {default_len:,})." if params else ""),
        )


def _named(fn: Callable[..., Any], name: str, module: str, sig: inspect.Signature, doc: str) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()}
    fn.__annotations__["return"] = sig.return_annotation
    fn.__doc__ = doc
    return fn
