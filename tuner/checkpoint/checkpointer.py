"""The three checkpointers: `HFCheckpointer`, `MetaCheckpointer`, `NativeCheckpointer`.

Each reads the weights of ``checkpoint_dir`` (converted to tuner's key layout), and writes
``output_dir/step_<N>/`` atomically in the format the weights came in, with the adapter and the
training state when the run has them. ``resume_from_checkpoint`` continues from the newest
complete ``step_<N>`` folder. They differ only in the key conversion and in the files around the
weights; the shared flow lives in `_Checkpointer`.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from tuner.checkpoint import hf_folder
from tuner.checkpoint.atomic import (
    atomic_checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    read_marker,
)
from tuner.checkpoint.files import check_dir, discover_files, resolve_files
from tuner.checkpoint.hf_keys import fused_in_hf, hf_to_tuner, tuner_to_hf
from tuner.checkpoint.meta_keys import meta_to_tuner, tuner_to_meta
from tuner.checkpoint.peft_format import load_peft_adapter, save_peft_adapter
from tuner.checkpoint.sharded import SHARDED_STATE_DIR
from tuner.checkpoint.training_state import TRAINING_STATE_NAME, load_training_state, save_training_state
from tuner.checkpoint.weights import (
    DEFAULT_MAX_SHARD_SIZE,
    _untie,
    iter_weight_files,
    load_weight_file,
    save_sharded_safetensors,
    write_safetensors_file,
    write_torch_file,
)
from tuner.errors import CheckpointError, ConfigError, UsageError
from tuner.models.families import families, family

StateDict = dict[str, torch.Tensor]
ShardCallback = Callable[[StateDict], None]

TUNER_ADAPTER_NAME = "adapter.safetensors"
#: Where the adapter goes when the folder also holds the (merged) model: a subfolder, because
#: transformers' ``from_pretrained`` would apply an ``adapter_config.json`` next to ``config.json``
#: on top of the merged weights (applying it twice).
ADAPTER_SUBDIR = "adapter"
PEFT_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class _Checkpointer:
    """Shared flow: file resolution, resume discovery, atomic saves, pruning."""

    FORMAT = ""  # "hf", "meta" or "native"

    def __init__(
        self,
        checkpoint_dir: str | Path,
        checkpoint_files: Any,
        model_type: Any,
        output_dir: str | Path,
        adapter_checkpoint: str | Path | None = None,
        recipe_checkpoint: str | Path | None = None,
        resume_from_checkpoint: bool | str | Path = False,
        safe_serialization: bool = True,
        keep_last_n_checkpoints: int | None = None,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
        sharded_state: bool = True,
        should_load_recipe_state: bool = False,
    ) -> None:
        self.checkpoint_dir = check_dir(checkpoint_dir)
        self.family = family(model_type, "checkpointer.model_type")
        self.model_type = self.family.model_type
        if output_dir is None or str(output_dir).strip() == "":
            raise ConfigError("checkpointer.output_dir is not set", fix="set it to the folder where checkpoints go")
        self.output_dir = Path(str(output_dir)).expanduser()
        if keep_last_n_checkpoints is not None and int(keep_last_n_checkpoints) < 1:
            raise ConfigError(
                f"checkpointer.keep_last_n_checkpoints is {keep_last_n_checkpoints}; it must be at least 1",
                fix="set it to a positive number, or null to keep every checkpoint",
            )
        self.keep_last_n_checkpoints = None if keep_last_n_checkpoints is None else int(keep_last_n_checkpoints)
        self.safe_serialization = bool(safe_serialization)
        self.max_shard_size = max_shard_size
        # With several ranks: save the training state sharded (DCP, each rank its shards) instead
        # of gathering the optimizer on rank 0; see tuner/checkpoint/sharded.py. No effect on one device.
        self.sharded_state = bool(sharded_state)
        self.checkpoint_files = resolve_files(self.checkpoint_dir, checkpoint_files, self.FORMAT)
        self.adapter_checkpoint = self._optional_path(adapter_checkpoint, "adapter_checkpoint")
        self.recipe_checkpoint = self._optional_path(recipe_checkpoint, "recipe_checkpoint")
        # torchtune 0.6.1's name for resuming; either one asks for it.
        self.resume_dir = self._find_resume_dir(resume_from_checkpoint or bool(should_load_recipe_state))
        self.resume_from_checkpoint = self.resume_dir is not None
        if self.resume_dir is not None:
            saved_format = (read_marker(self.resume_dir) or {}).get("format", self.FORMAT)
            if saved_format != self.FORMAT:
                raise ConfigError(
                    f"the checkpoint to resume, {str(self.resume_dir)!r}, was written in {saved_format!r} format "
                    f"but this run uses {type(self).__name__} ({self.FORMAT!r})",
                    fix="use the checkpointer of the run that wrote it, or another output_dir to start fresh",
                )
        self.resume_sharded_state = self._find_sharded_state()
        self.last_saved: Path | None = None
        self._setup_format()

    # -- configuration --------------------------------------------------------------------------
    def _setup_format(self) -> None:
        """Read what the format needs besides the weights (e.g. config.json)."""

    def _optional_path(self, value: str | Path | None, key: str) -> Path | None:
        if value is None or str(value).strip() == "":
            return None
        p = Path(str(value)).expanduser()
        p = p if p.is_absolute() else self.checkpoint_dir / p
        if not p.exists():
            raise CheckpointError(
                f"checkpointer.{key} {str(value)!r} not found (looked at {str(p)!r})",
                fix=f"give a path relative to checkpoint_dir or an absolute one, or remove checkpointer.{key}",
            )
        return p

    def _find_resume_dir(self, resume: bool | str | Path) -> Path | None:
        if (
            resume is None
            or resume is False
            or (isinstance(resume, str) and resume.strip().lower() in ("", "false", "0", "no"))
        ):
            return None
        if isinstance(resume, (str, Path)) and str(resume).strip().lower() not in ("true", "1", "yes"):
            folder = Path(str(resume)).expanduser()
            if read_marker(folder) is None:
                raise CheckpointError(
                    f"resume_from_checkpoint {str(folder)!r} is not a complete checkpoint folder (no "
                    "CHECKPOINT_COMPLETE in it)",
                    fix="point it at a step_<N> folder written by tuner, or set it to True to use the newest in "
                    "output_dir",
                )
            return folder
        latest = latest_checkpoint(self.output_dir)
        if latest is None:
            raise CheckpointError(
                f"resume_from_checkpoint is set but {str(self.output_dir)!r} holds no complete checkpoint "
                "(a step_<N> folder with a CHECKPOINT_COMPLETE file)",
                fix="to start fresh set checkpointer.resume_from_checkpoint=False (or resume_from_checkpoint=False); "
                "to resume another run point checkpointer.output_dir at its output folder",
            )
        return latest[1]

    def _find_sharded_state(self) -> dict[str, Any] | None:
        """``{"path", "world_size"}`` of the resume folder's sharded training state (written by a
        distributed run), or None when it has none or ``recipe_checkpoint`` names the state."""
        if self.resume_dir is None or self.recipe_checkpoint is not None:
            return None
        info = (read_marker(self.resume_dir) or {}).get("sharded_state")
        if not isinstance(info, dict):
            return None
        return {
            "path": self.resume_dir / str(info.get("dir", SHARDED_STATE_DIR)),
            "world_size": int(info.get("world_size", -1)),
            "step_dir": self.resume_dir,
        }

    # -- format hooks (overridden per format) ---------------------------------------------------
    def _to_tuner(self, state_dict: StateDict, source: Path) -> StateDict:
        raise NotImplementedError

    def _write_model(self, state_dict: StateDict, folder: Path) -> list[str]:
        raise NotImplementedError

    def _write_adapter(self, adapter: StateDict, adapter_config: dict[str, Any] | None, folder: Path) -> None:
        """Write the adapter with tuner keys (Meta / native); HF writes PEFT format instead."""
        meta = {
            "tuner_adapter_config": json.dumps(adapter_config or {}, default=str),
            "tuner_model_type": self.model_type,
        }
        write_safetensors_file(_plain(adapter), folder / TUNER_ADAPTER_NAME, meta)

    def _read_adapter(self, path: Path) -> StateDict:
        """An adapter in tuner keys from ``path`` (a folder or a file)."""
        file = _adapter_file(path)
        if file.name == TUNER_ADAPTER_NAME or file.suffix == ".pt":
            return load_weight_file(file)
        return self._read_peft_adapter(file)

    def _read_peft_adapter(self, file: Path) -> StateDict:
        raise CheckpointError(
            f"{str(file)!r} is a PEFT adapter, which {type(self).__name__} cannot read",
            fix="use HFCheckpointer for Hugging Face checkpoints and PEFT adapters",
        )

    def _copy_side_files(self, folder: Path, adapter_only: bool) -> None:
        """Copy what belongs next to the weights (config, tokenizer, ...)."""

    # -- loading --------------------------------------------------------------------------------
    def _model_source(self) -> tuple[Path, list[Path]]:
        """Folder and files of the model weights to load.

        On resume: the resume folder's weights for a full fine-tune; for an adapter run (the
        folder has an adapter) the base model of ``checkpoint_dir``, since a saved full model of
        an adapter run has the adapter merged in.
        """
        if self.resume_dir is not None:
            marker = read_marker(self.resume_dir) or {}
            if marker.get("has_model", True) and not marker.get("has_adapter", False):
                return self.resume_dir, discover_files(self.resume_dir, self.FORMAT)
        return self.checkpoint_dir, self.checkpoint_files

    def _adapter_source(self) -> Path | None:
        # A sharded training state holds the trained adapter itself (the FSDP2 placement loads it).
        if (
            self.resume_dir is not None
            and self.resume_sharded_state is None
            and read_marker(self.resume_dir).get("has_adapter")
        ):
            return self.resume_dir
        return self.adapter_checkpoint

    def _training_state_source(self) -> Path | None:
        if self.recipe_checkpoint is not None:
            return self.recipe_checkpoint
        if self.resume_dir is None:
            return None
        path = self.resume_dir / TRAINING_STATE_NAME
        if not path.is_file() and self.resume_sharded_state is not None:
            return None  # the training state is sharded; the FSDP2 placement loads it (resume_sharded_state)
        if not path.is_file():
            raise CheckpointError(
                f"the checkpoint {str(self.resume_dir)!r} has no {TRAINING_STATE_NAME}, so training cannot resume "
                "from it",
                fix=f"start a new run from it instead: set checkpointer.checkpoint_dir={self.resume_dir} and "
                "resume_from_checkpoint=False",
            )
        return path

    def iter_model_shards(self) -> Iterator[StateDict]:
        """Yield the model's weights one file at a time, each converted to tuner keys."""
        folder, files = self._model_source()
        for _, shard in iter_weight_files(files):
            yield self._to_tuner(shard, folder)
            del shard

    def load_checkpoint(self, on_shard: ShardCallback | None = None, weights: bool = True) -> dict[str, Any]:
        """Load the model (tuner keys), and the adapter and training state when there are any.

        Returns ``{"model": sd, "adapter"?: sd, "training_state"?: dict, "resumed_from"?: info}``.
        With ``on_shard`` each file's converted state dict is handed to ``on_shard`` and dropped
        (so a model built on the meta device fills shard by shard); ``"model"`` is then absent.
        ``weights=False`` reads no weight file at all (ranks that receive the weights by broadcast).
        """
        result: dict[str, Any] = {}
        if weights and on_shard is not None:
            for shard in self.iter_model_shards():
                on_shard(shard)
        elif weights:
            folder, files = self._model_source()
            merged: StateDict = {}
            for _, shard in iter_weight_files(files):
                merged.update(shard)
                del shard
            result["model"] = self._to_tuner(merged, folder)
        result.update(self._load_extras())
        return result

    def _load_extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        adapter_src = self._adapter_source()
        if adapter_src is not None:
            out["adapter"] = self._read_adapter(adapter_src)
        state_src = self._training_state_source()
        if state_src is not None:
            out["training_state"] = load_training_state(state_src)
        if self.resume_dir is not None:
            marker = read_marker(self.resume_dir) or {}
            out["resumed_from"] = {
                "path": str(self.resume_dir),
                "step": marker.get("step"),
                "epoch": marker.get("epoch"),
            }
        return out

    # -- saving ---------------------------------------------------------------------------------
    def save_checkpoint(
        self,
        state: dict[str, Any],
        step: int,
        epoch: int,
        adapter_only: bool = False,
        write_extra: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write ``output_dir/step_<step>/`` atomically and return its path.

        ``state`` holds ``model`` (tuner keys; merged, plain tensors on any device), optionally
        ``adapter`` (tuner keys) with ``adapter_config`` (rank, alpha, target modules, variant
        flags), ``training_state`` (plain data; see `capture_rng_state`) and ``training_dtype``
        (``bf16`` / ``fp32`` / ``fp16``, recorded in the manifest for generation and merge). With ``adapter_only``
        only the adapter (and training state) is written, at the folder's top level; next to a
        full model the adapter goes to the ``adapter/`` subfolder. Older checkpoints beyond
        ``keep_last_n_checkpoints`` are removed after the save succeeded.

        ``write_extra(tmp)`` runs first inside the temporary folder (the FSDP2 placement writes
        the sharded training state there, all ranks together); ``state["sharded_state"]``
        (``{"dir", "world_size"}``) is then recorded in the manifest.
        """
        if not isinstance(state, dict):
            raise UsageError(f"save_checkpoint expects a dict state, got {type(state).__name__}")
        has_adapter = state.get("adapter") is not None
        if adapter_only and not has_adapter:
            raise UsageError(
                "save_checkpoint(adapter_only=True) but the state has no 'adapter'",
                fix="pass state['adapter'] (the adapter parameters) or save the full model",
            )
        write_model = not adapter_only
        if write_model and state.get("model") is None:
            raise UsageError(
                "save_checkpoint got no state['model']", fix="pass the model state dict, or adapter_only=True"
            )
        manifest: dict[str, Any] = {
            **self.describe(),
            "epoch": int(epoch),
            "adapter_only": bool(adapter_only),
            "has_model": write_model,
            "has_adapter": has_adapter,
            "has_training_state": state.get("training_state") is not None or state.get("sharded_state") is not None,
        }
        if state.get("sharded_state") is not None:
            manifest["sharded_state"] = dict(state["sharded_state"])
        if state.get("training_dtype") is not None:  # generation and merge default to it
            manifest["training_dtype"] = str(state["training_dtype"])
        try:
            with atomic_checkpoint_dir(self.output_dir, step, manifest) as tmp:
                if write_extra is not None:
                    write_extra(tmp)
                if write_model:
                    self.write_model_folder(state["model"], tmp)
                else:
                    self._copy_side_files(tmp, adapter_only=True)
                if has_adapter:
                    adapter_dir = tmp if adapter_only else tmp / ADAPTER_SUBDIR
                    adapter_dir.mkdir(exist_ok=True)
                    self._write_adapter(state["adapter"], state.get("adapter_config"), adapter_dir)
                    manifest["adapter_dir"] = "." if adapter_only else ADAPTER_SUBDIR
                if state.get("training_state") is not None:
                    save_training_state(tmp / TRAINING_STATE_NAME, state["training_state"])
        except (CheckpointError, UsageError):
            raise
        except Exception as e:  # OSError, or a writer's own error (torch.save's RuntimeError, SafetensorError)
            raise write_failure(e, self.output_dir, step) from e
        final = self.output_dir / f"step_{int(step)}"
        self.last_saved = final
        if self.keep_last_n_checkpoints is not None:
            prune_checkpoints(self.output_dir, self.keep_last_n_checkpoints, protect=final)
        return final

    def write_model_folder(self, state_dict: StateDict, folder: Path) -> None:
        """Write a complete model folder's files into ``folder`` in this checkpointer's format: the
        weights (merged; tuner keys in), the config with the saved dtype, and the tokenizer and other
        side files of ``checkpoint_dir``. Training checkpoints and `save_model_folder` (merge) both
        write their model through it."""
        _check_no_adapter_keys(state_dict)
        self._write_model(state_dict, folder)
        self._copy_side_files(folder, adapter_only=False)

    def describe(self) -> dict[str, Any]:
        """What every manifest this checkpointer writes says about the model's source."""
        return {"format": self.FORMAT, "model_type": self.model_type, "source_checkpoint_dir": str(self.checkpoint_dir)}

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints in ``output_dir`` as ``(step, folder)``, oldest first."""
        return list_checkpoints(self.output_dir)


_DISK_FULL_SIGNS = ("no space left", "storagefull", "file write failed", "disk quota")


def failure_reason(error: BaseException, where: Path) -> tuple[str, str]:
    """Why writing into ``where`` failed, in words (disk full, no permission, ...), and the fix."""
    text = str(error)
    code = getattr(error, "errno", None)
    try:
        free = shutil.disk_usage(where if Path(where).exists() else Path(where).parent).free
    except OSError:
        free = None
    if code in (errno.ENOSPC, errno.EDQUOT) or any(sign in text.lower() for sign in _DISK_FULL_SIGNS):
        why = "the disk is full" + (f" ({free / 2**20:.0f} MiB free)" if free is not None else "")
        return why, "free disk space (or set output_dir on a larger disk)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"no permission to write there ({text.splitlines()[0] if text else type(error).__name__})",
            "fix the folder's permissions or choose another output_dir",
        )
    why = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    return why, "check the disk and the folder"


def write_failure(error: BaseException, output_dir: Path, step: int) -> CheckpointError:
    """A save of ``step_<step>`` failed: say why in words (disk full, no permission, ...) and which
    checkpoint is intact to resume from. The failed step's temporary folder is already gone."""
    why, fix = failure_reason(error, output_dir)
    latest = latest_checkpoint(output_dir)
    safe = (
        f"step_{latest[0]} ({latest[1]}) is intact: resume from it with resume_from_checkpoint=True"
        if latest is not None
        else "no earlier checkpoint exists, so the run has to start again"
    )
    return CheckpointError(f"could not save checkpoint step_{step} in {str(output_dir)!r}: {why}; {safe}", fix=fix)


def _plain(sd: StateDict) -> StateDict:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def _check_no_adapter_keys(sd: StateDict) -> None:
    lora = [k for k in sd if "lora_" in k]
    if lora:
        raise UsageError(
            f"state['model'] holds adapter parameters ({', '.join(lora[:3])}{', ...' if len(lora) > 3 else ''}); "
            "a saved model folder must hold the merged base weights",
            fix="merge the adapter into the base weights first (tuner.peft) and pass the adapter in state['adapter']",
        )


def _adapter_file(path: Path) -> Path:
    if path.is_file():
        return path
    for folder in (path, path / ADAPTER_SUBDIR):
        for name in (TUNER_ADAPTER_NAME, *PEFT_ADAPTER_FILES):
            if (folder / name).is_file():
                return folder / name
    raise CheckpointError(
        f"no adapter weights in {str(path)!r} or its {ADAPTER_SUBDIR}/ subfolder "
        f"(looked for {TUNER_ADAPTER_NAME}, {', '.join(PEFT_ADAPTER_FILES)})",
        fix="point checkpointer.adapter_checkpoint at the adapter folder or file",
    )


class HFCheckpointer(_Checkpointer):
    """Hugging Face model folders: ``model.safetensors``, sharded safetensors with
    ``model.safetensors.index.json``, or legacy ``pytorch_model*.bin``; ``config.json`` required.

    Saved folders load with ``AutoModelForCausalLM.from_pretrained`` (and adapters with
    ``peft.PeftModel.from_pretrained``) as they are.
    """

    FORMAT = "hf"

    def _setup_format(self) -> None:
        self.hf_config = hf_folder.read_hf_config(self.checkpoint_dir)
        hf_folder.check_family(self.model_type, self.hf_config, self.checkpoint_dir)

    def _config_for(self, folder: Path) -> dict[str, Any]:
        return self.hf_config if folder == self.checkpoint_dir else hf_folder.read_hf_config(folder)

    def _to_tuner(self, state_dict: StateDict, source: Path) -> StateDict:
        return hf_to_tuner(state_dict, self.model_type, self._config_for(source))

    def _write_model(self, state_dict: StateDict, folder: Path) -> list[str]:
        hf_sd = tuner_to_hf(state_dict, self.model_type, self.hf_config)
        files = save_sharded_safetensors(
            hf_sd, folder, max_shard_size=self.max_shard_size, safe_serialization=self.safe_serialization
        )
        hf_folder.write_hf_config(self.hf_config, folder, hf_folder.saved_dtype(hf_sd))
        return files + [hf_folder.CONFIG_NAME]

    def _write_adapter(self, adapter: StateDict, adapter_config: dict[str, Any] | None, folder: Path) -> None:
        fused = sorted({k.rsplit(".", 2)[0] for k in adapter if fused_in_hf(k, self.model_type)})
        if fused:  # e.g. torchtune's Phi-3 configs: LoRA on q_proj and v_proj, which HF fuses into qkv_proj
            print(
                f"[tuner] note: {self.model_type}'s HF checkpoints fuse {fused[0].rsplit('.', 1)[-1]} and its "
                "siblings, "
                f"so a PEFT adapter cannot hold this one; it is saved in tuner's keys as {TUNER_ADAPTER_NAME} "
                "(resume and `tune run generate adapter_dir=...` read it; the merged model beside it loads in "
                "transformers)",
                flush=True,
            )
            return super()._write_adapter(adapter, adapter_config, folder)
        config = dict(adapter_config or {})
        config.setdefault("base_model_name_or_path", str(self.checkpoint_dir))
        save_peft_adapter(_plain(adapter), folder, self.model_type, self.hf_config, config)

    def _read_peft_adapter(self, file: Path) -> StateDict:
        return load_peft_adapter(file.parent, self.model_type, self.hf_config)

    def _copy_side_files(self, folder: Path, adapter_only: bool) -> None:
        hf_folder.copy_side_files(self.checkpoint_dir, folder)


class NativeCheckpointer(_Checkpointer):
    """tuner's own layout: ``model.safetensors`` (or shards + index) in tuner keys; ``*.pt`` files
    (torchtune's native format, loaded with weights_only=True) are read too."""

    FORMAT = "native"

    def _to_tuner(self, state_dict: StateDict, source: Path) -> StateDict:
        return state_dict

    def _write_model(self, state_dict: StateDict, folder: Path) -> list[str]:
        return save_sharded_safetensors(
            state_dict, folder, max_shard_size=self.max_shard_size, metadata={"tuner_model_type": self.model_type}
        )

    def _copy_side_files(self, folder: Path, adapter_only: bool) -> None:
        hf_folder.copy_side_files(
            self.checkpoint_dir, folder, ("config.json", "params.json", *hf_folder.TOKENIZER_FILES)
        )


class MetaCheckpointer(_Checkpointer):
    """Meta's original format: ``consolidated.00.pth`` with ``params.json`` (one model-parallel
    shard; larger Meta checkpoints should be converted to HF first)."""

    FORMAT = "meta"
    PARAMS_NAME = "params.json"

    def _setup_format(self) -> None:
        if not self.family.meta_format:
            meta = " / ".join(dict.fromkeys(f.model_type for f in families() if f.meta_format))
            raise ConfigError(
                f"MetaCheckpointer reads Meta's original Llama checkpoints, not model_type {self.model_type}",
                fix=f"use HFCheckpointer for this model, or model_type {meta}",
            )
        if len(self.checkpoint_files) > 1:
            raise CheckpointError(
                f"{len(self.checkpoint_files)} Meta weight files given "
                f"({', '.join(p.name for p in self.checkpoint_files[:4])}); "
                "model-parallel Meta checkpoints are not supported",
                fix="use the Hugging Face version of the model with HFCheckpointer",
            )
        params = self.checkpoint_dir / self.PARAMS_NAME
        if not params.is_file():
            raise CheckpointError(
                f"{self.PARAMS_NAME} not found in {str(self.checkpoint_dir)!r}; MetaCheckpointer needs it "
                "(the number of heads) to convert the rotary layout",
                fix="download the Meta checkpoint with its params.json (e.g. the original/ folder of the HF repo)",
            )
        try:
            self.params: dict[str, Any] = json.loads(params.read_text(encoding="utf-8"))
            self._dims = {
                "num_heads": int(self.params["n_heads"]),
                "num_kv_heads": int(self.params.get("n_kv_heads") or self.params["n_heads"]),
                "dim": int(self.params["dim"]),
            }
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{str(params)!r} is not a valid Meta params.json (needs dim, n_heads): {e!r}",
                fix="download params.json again",
            ) from e

    def _to_tuner(self, state_dict: StateDict, source: Path) -> StateDict:
        return meta_to_tuner(state_dict, **self._dims)

    def _write_model(self, state_dict: StateDict, folder: Path) -> list[str]:
        meta_sd = tuner_to_meta(state_dict, **self._dims)
        write_torch_file(_untie(meta_sd), folder / "consolidated.00.pth")
        return ["consolidated.00.pth"]

    def _copy_side_files(self, folder: Path, adapter_only: bool) -> None:
        hf_folder.copy_side_files(self.checkpoint_dir, folder, (self.PARAMS_NAME, "tokenizer.model", "tokenizer.json"))
