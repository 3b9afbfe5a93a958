"""Load a model for inference from a recipe's settings: checkpointer + base model builder,
optional adapters merged in (one, or several to switch between), on the configured device and
dtype.

Shared by the generate, eval and merge recipes; the keys are `InferenceSettings`:

- ``model``: the *base* model builder (e.g. ``tuner.models.llama3_2.llama3_2_1b``), not a
  ``lora_*`` one: adapters are merged into the base weights.
- ``checkpointer``: any tuner checkpointer; ``checkpoint_dir`` may be a base model or a
  fine-tuned output folder (``output_dir/step_N``, which holds the merged model).
  ``checkpointer.adapter_checkpoint`` is taken as an ``adapter_dir``.
- ``adapter_dir``: one adapter folder (PEFT format), a run's ``step_N`` folder (adapter in
  ``adapter/``), or a run's ``output_dir`` (its newest complete step).
- ``adapters``: ``{name: folder}``, several adapters over the same base, switched per prompt, or
  (``mixed_adapters``) chosen per row of one batch over the unmerged base.
- ``adapter``: which adapter is active by default (a name from ``adapters``, or ``base``); when
  unset: the ``adapter_dir`` one if given, else the base model.
- ``device`` (cuda / cpu / auto), ``dtype`` (bf16 / fp32 / fp16; null: the dtype the run trained
  in, saved with the checkpoint, else the checkpoint's own), ``seed``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from tuner.checkpoint.atomic import latest_checkpoint, read_marker
from tuner.checkpoint.fill import build_on_meta, fill_model
from tuner.config import instantiate
from tuner.config.settings import read_settings
from tuner.devices import get_device, get_dtype
from tuner.errors import CheckpointError, ConfigError
from tuner.generation.adapters import Adapter, AdapterSwitcher, load_adapter, merge_adapter_into
from tuner.generation.multi_adapter import MixedAdapters
from tuner.generation.settings import EvalSettings, GenerationSettings, InferenceSettings, MergeSettings
from tuner.peft.utils import ADAPTER_MODULES


@dataclass
class InferenceModel:
    """A loaded model ready for inference, and what built it."""

    model: nn.Module
    checkpointer: Any
    device: torch.device
    dtype: torch.dtype
    switcher: Optional[AdapterSwitcher] = None
    tokenizer: Any = None
    dtype_source: str = "config"  # where the dtype came from (for the log line)
    _mixed: Optional[MixedAdapters] = field(default=None, repr=False)

    @property
    def model_type(self) -> str:
        return self.checkpointer.model_type

    def use_adapter(self, name: Optional[str]) -> None:
        """Activate adapter ``name`` (None / "base": the base model)."""
        if self.switcher is None:
            if name not in (None, "base"):
                raise ConfigError(
                    f"adapter {name!r} was asked for but no adapters are loaded",
                    fix="list it under adapters: {name: folder} or give adapter_dir",
                )
            return
        self.switcher.activate(name)

    def mixed_adapters(self) -> Optional[MixedAdapters]:
        """The loaded adapters as `MixedAdapters` (one per row of a batch) over the base, which this
        makes the active weights again; None when no adapters are loaded."""
        if self.switcher is None:
            return None
        self.switcher.activate(None)  # the stacks are built over, and added to, the unmerged base
        if self._mixed is None:
            self._mixed = MixedAdapters(self.model, self.switcher.adapters)
        return self._mixed

    def describe(self, adapter: Optional[str] = None) -> str:
        """What answers: ``adapter NAME (path)`` or ``model FOLDER`` (a base or a fine-tuned folder)."""
        if adapter not in (None, "base") and self.switcher is not None and adapter in self.switcher.adapters:
            path = self.switcher.adapters[adapter].path
            return f"adapter {path}" if adapter == "adapter" else f"adapter {adapter} ({path})"
        return f"model {self.checkpointer.checkpoint_dir}"


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter location as given: a run's ``output_dir`` (with ``step_N`` folders) becomes its
    newest complete step; anything else is returned as it is (checked when it is read)."""
    folder = Path(str(path)).expanduser()
    if folder.is_dir() and read_marker(folder) is None and not (folder / "adapter_config.json").is_file():
        latest = latest_checkpoint(folder)
        if latest is not None:
            return latest[1]
        if any(p.name.startswith(("step_", ".tmp-step_")) for p in folder.iterdir()):
            raise CheckpointError(
                f"{folder} holds no complete checkpoint yet",
                fix="train first (the run writes step_N folders there), or point adapter_dir at an adapter folder",
            )
    if not folder.exists():
        raise CheckpointError(
            f"adapter folder {str(folder)!r} does not exist",
            fix="train first, or point adapter_dir at a run's output_dir, its step_N folder or an adapter folder",
        )
    return folder


def adapter_dirs(settings: InferenceSettings, checkpointer: Any = None) -> dict[str, str]:
    """``{name: folder}`` from ``adapter_dir`` (named "adapter"), ``adapters`` and the checkpointer's
    ``adapter_checkpoint``."""
    out: dict[str, str] = {}
    node = settings.adapters
    if node is not None:
        if not isinstance(node, (dict, DictConfig)):
            raise ConfigError(
                f"adapters must be a mapping {{name: folder}}, got {node!r}",
                fix="write adapters: {my_task: /path/to/step_N}",
            )
        out.update({str(k): str(resolve_adapter_dir(v)) for k, v in node.items()})
    single = settings.adapter_dir
    from_ckpt = getattr(checkpointer, "adapter_checkpoint", None)
    if single is not None and from_ckpt is not None:
        raise ConfigError("both adapter_dir and checkpointer.adapter_checkpoint are set", fix="keep one of them")
    single = single if single is not None else from_ckpt
    if single is not None:
        if "adapter" in out:
            raise ConfigError(
                "adapter_dir and an adapters entry named 'adapter' collide", fix="rename the adapters entry"
            )
        out = {"adapter": str(resolve_adapter_dir(single)), **out}
    return out


def default_adapter(settings: InferenceSettings, adapters: Iterable[str]) -> Optional[str]:
    """The adapter active unless a prompt names another: ``adapter``, else ``adapter_dir``'s, else None."""
    if settings.adapter is not None:
        return str(settings.adapter)
    return "adapter" if "adapter" in adapters else None


def build_checkpointer(settings: InferenceSettings) -> Any:
    """The configured checkpointer (``output_dir`` defaults to a temporary folder: inference writes none)."""
    node = settings.checkpointer
    extra = {} if node.get("output_dir") is not None else {"output_dir": tempfile.gettempdir()}
    return instantiate(node, **extra)


def build_model(settings: InferenceSettings, checkpointer: Any, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Build ``settings.model`` on meta and fill it from ``checkpointer`` (frozen, in eval mode)."""
    model = build_on_meta(settings.model, dtype)
    if any(isinstance(m, ADAPTER_MODULES) for m in model.modules()):
        raise ConfigError(
            f"model is a LoRA builder ({settings.model._component_}); inference loads the base model and merges "
            "adapters into it",
            fix="use the base builder (e.g. tuner.models.llama3_2.llama3_2_1b) and give the adapter with adapter_dir",
        )
    fill_model(model, checkpointer, device, dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def trained_dtype(folders: Iterable[Path], checkpointer: Any) -> tuple[str | None, str]:
    """The dtype the weights were trained or saved in, and where that was read: a tuner checkpoint's
    manifest (``training_dtype``, in the folder or the step folder above an ``adapter/``), else the
    checkpoint's ``config.json`` (``torch_dtype``)."""
    for folder in folders:
        for candidate in (folder, folder.parent):
            dtype = (read_marker(candidate) or {}).get("training_dtype")
            if dtype:
                return str(dtype), f"trained in {dtype} ({candidate.name})"
    hf_config = getattr(checkpointer, "hf_config", None) or {}
    saved = hf_config.get("torch_dtype") or hf_config.get("dtype")
    if saved:
        return str(saved), f"the checkpoint's config.json says {saved}"
    return None, "default"


def inference_dtype(
    settings: InferenceSettings, device: torch.device, checkpointer: Any, adapter_folders: Iterable[Path]
) -> tuple[torch.dtype, str]:
    """``settings.dtype``, or (null) the dtype the checkpoint was trained in, else bf16 on a GPU and
    fp32 on the CPU; with where it came from."""
    if settings.dtype is not None:
        return get_dtype(settings.dtype, device), "dtype in the config"
    folders = [*adapter_folders, Path(checkpointer.checkpoint_dir)]
    name, source = trained_dtype(folders, checkpointer)
    if name is not None:
        try:
            return get_dtype(name, device), source
        except ConfigError:
            pass  # e.g. bf16 on a GPU without it: fall through to the default
    return (torch.bfloat16 if device.type == "cuda" else torch.float32), f"default on {device.type}"


def load_inference_model(
    settings: InferenceSettings | DictConfig, *, with_tokenizer: bool = True, keep_base: bool = True
) -> InferenceModel:
    """Build the model (and tokenizer) of ``settings`` (or of a generate / eval / merge config) with
    its adapters.

    With ``keep_base`` the adapters go into an `AdapterSwitcher` and the default one (see the
    module docstring) is active; ``keep_base=False`` merges a single adapter in place (export).
    """
    if not isinstance(settings, InferenceSettings):
        settings = read_settings(settings, InferenceSettings, GenerationSettings, EvalSettings, MergeSettings)[0]
    device = get_device(settings.device)
    if settings.seed is not None:
        torch.manual_seed(int(settings.seed))
    checkpointer = build_checkpointer(settings)
    folders = adapter_dirs(settings, checkpointer)
    dtype, dtype_source = inference_dtype(settings, device, checkpointer, [Path(f) for f in folders.values()])
    model = build_model(settings, checkpointer, device, dtype)
    hf_config = getattr(checkpointer, "hf_config", None)
    adapters: dict[str, Adapter] = {
        name: load_adapter(path, checkpointer.model_type, hf_config, name=name) for name, path in folders.items()
    }
    result = InferenceModel(
        model=model, checkpointer=checkpointer, device=device, dtype=dtype, dtype_source=dtype_source
    )
    if adapters:
        if keep_base or len(adapters) > 1:
            result.switcher = AdapterSwitcher(model, adapters)
            result.use_adapter(default_adapter(settings, adapters))
        else:
            merge_adapter_into(model, next(iter(adapters.values())))
    if with_tokenizer:
        if settings.tokenizer is None:
            raise ConfigError(
                "the config has no tokenizer", fix="add a tokenizer node (e.g. tuner.models.llama3.llama3_tokenizer)"
            )
        result.tokenizer = instantiate(settings.tokenizer)
    return result
