"""Sharded training state for fast, exact resume of distributed runs (torch.distributed.checkpoint).

A distributed run (FSDP2) writes, next to the exported model of ``step_<N>/``, the folder
``step_<N>/sharded_state/`` in DCP's format: every rank writes its own shards in parallel (one
``__<rank>_0.distcp`` file each), rank 0 the ``.metadata`` index. It holds

- ``model``: the trainable parameters (all of them for a full fine-tune, the adapters for LoRA),
  as the ranks' DTensor shards;
- ``optimizer``: the optimizer state, sharded like the parameters;
- ``trainer``: step, epoch, position in the epoch, seed, lr scheduler (plain data, the same on
  every rank);
- ``ranks.rank_<r>``: what differs per rank: RNG states and the gradient scaler.

Non-tensor entries are stored as one pickled blob each (wrapped in a 1-tuple, which DCP keeps
whole) and read back with ``torch.load(weights_only=True)`` (`SafeLoadPlanner`), like every
other file tuner loads. The folder is written inside the step's temporary folder, so the step's
``CHECKPOINT_COMPLETE`` manifest (which records ``sharded_state: {dir, world_size}``) still
says whether the whole checkpoint is there.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from tuner.checkpoint.training_state import to_weights_only
from tuner.errors import CheckpointError

SHARDED_STATE_DIR = "sharded_state"


def blob(obj: Any) -> tuple:
    """Wrap plain data so that DCP stores it as one entry (a tuple is a leaf to DCP)."""
    return (to_weights_only(obj),)


def unblob(value: Any, what: str) -> Any:
    if not (isinstance(value, tuple) and len(value) == 1):
        raise CheckpointError(
            f"the sharded state's {what!r} entry is malformed ({type(value).__name__})",
            fix="resume from another checkpoint, or start fresh",
        )
    return value[0]


def _safe_load_planner():
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class SafeLoadPlanner(DefaultLoadPlanner):
        """DCP's default planner, but non-tensor entries load with ``weights_only=True``."""

        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeLoadPlanner()


def save_sharded_state(folder: str | Path, state: dict[str, Any]) -> None:
    """Every rank calls this with its part of ``state``; DCP writes each rank's shards (fsynced)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(folder), sync_files=True))


def load_sharded_state(folder: str | Path, state: dict[str, Any]) -> None:
    """Every rank calls this; fills ``state`` in place (tensors are copied into the given ones,
    blobs replace their placeholders), resharding where the shards are laid out differently."""
    folder = Path(folder)
    if not (folder / ".metadata").is_file():
        raise CheckpointError(
            f"the sharded training state {str(folder)!r} is incomplete (no .metadata)",
            fix="resume from another checkpoint (remove this step folder), or start fresh",
        )
    import torch.distributed.checkpoint as dcp

    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(folder)), planner=_safe_load_planner())
    except CheckpointError:
        raise
    except Exception as e:  # DCP wraps rank failures; name the folder and what to do
        raise CheckpointError(
            f"could not load the sharded training state {str(folder)!r}: {_first_line(e)}",
            fix="resume with the same model, LoRA and optimizer settings as the run that wrote it, "
            "or from another checkpoint",
        ) from e


def check_world_size(info: dict[str, Any], world_size: int, step_dir: str | Path) -> None:
    """A sharded training state resumes only on as many ranks as wrote it (the data order, the
    per-rank RNG streams and the global batch depend on it)."""
    saved = int(info.get("world_size", -1))
    if saved == int(world_size):
        return
    here = "one process" if world_size == 1 else f"{world_size} processes"
    raise CheckpointError(
        f"the checkpoint {str(step_dir)!r} holds its training state sharded across {saved} processes, "
        f"but this run has {here}; resuming exactly needs the same number",
        fix=f"resume with {saved} processes in all (e.g. tune run --nproc_per_node {saved} ...), or start a new run "
        f"from the weights it holds: checkpointer.checkpoint_dir={step_dir} resume_from_checkpoint=False",
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
