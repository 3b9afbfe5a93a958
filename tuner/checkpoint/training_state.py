"""Training state for exact resume: RNG capture/restore and a ``training_state.pt`` that loads
with ``torch.load(weights_only=True)``.

Everything saved must be plain data (tensors, numbers, strings, bools, None, lists, tuples, dicts,
dtypes, devices). `to_weights_only` checks that before writing and converts numpy values, so a
save never produces a file that resume then refuses to open.
"""

from __future__ import annotations

import random
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuner.checkpoint.weights import load_torch_file, write_torch_file
from tuner.errors import CheckpointError

TRAINING_STATE_NAME = "training_state.pt"

_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def capture_rng_state() -> dict[str, torch.Tensor]:
    """The state of every random generator a run uses, as a flat dict of tensors.

    Keys: ``python`` (+ ``python_gauss``), ``numpy`` (+ ``numpy_meta``, ``numpy_gauss``; only when
    numpy has been imported), ``torch`` (CPU) and ``cuda`` (one row per visible GPU, when CUDA is
    initialised).
    """
    state: dict[str, torch.Tensor] = {}
    version, internal, gauss = random.getstate()
    state["python"] = torch.tensor([version, *internal], dtype=torch.int64)
    state["python_gauss"] = torch.tensor(
        [0.0 if gauss is None else 1.0, 0.0 if gauss is None else gauss], dtype=torch.float64
    )
    np = sys.modules.get("numpy")
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        if name == "MT19937":
            state["numpy"] = torch.from_numpy(keys.astype("int64"))
            state["numpy_meta"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
            state["numpy_gauss"] = torch.tensor([cached], dtype=torch.float64)
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Put back generator states captured by `capture_rng_state` (missing keys are left alone)."""
    if not isinstance(state, dict):
        raise CheckpointError(
            f"the saved RNG state is a {type(state).__name__}, not a dict",
            fix="the training state was not written by capture_rng_state; resume without it",
        )
    if "python" in state:
        values = [int(v) for v in state["python"].tolist()]
        gauss = state.get("python_gauss")
        g = None if gauss is None or float(gauss[0]) == 0.0 else float(gauss[1])
        random.setstate((values[0], tuple(values[1:]), g))
    if "numpy" in state:
        pos, has_gauss = (int(v) for v in state["numpy_meta"].tolist())
        cached = float(state["numpy_gauss"][0])
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        rows = list(state["cuda"])
        for i in range(min(len(rows), torch.cuda.device_count())):
            torch.cuda.set_rng_state(rows[i].to(torch.uint8).cpu(), device=i)


def to_weights_only(obj: Any, where: str = "training_state") -> Any:
    """Return ``obj`` in a form ``torch.load(weights_only=True)`` accepts, or raise naming the culprit.

    Tensors are detached and moved to CPU, numpy arrays become tensors and numpy scalars Python
    numbers; anything else that is not plain data raises a CheckpointError with its path.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
            raise CheckpointError(
                f"{where} is a tensor subclass ({type(obj).__name__}) that weights_only loading rejects",
                fix="store a plain tensor (e.g. dequantize or call .full_tensor()) in the training state",
            )
        return t.cpu() if t.device.type != "cpu" else t
    if isinstance(obj, _PLAIN):
        return obj
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return torch.from_numpy(obj.copy())
        if isinstance(obj, np.generic):
            return obj.item()
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_weights_only(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: to_weights_only(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_weights_only(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(to_weights_only(v, where) for v in obj)
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__name__}, which torch.load(weights_only=True) cannot read "
        "back",
        fix="store plain data in the training state (tensors, numbers, strings, lists, dicts); call .state_dict() on "
        "objects",
    )


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Check ``state`` is weights_only-loadable, then ``torch.save`` it to ``path`` (fsynced)."""
    write_torch_file(to_weights_only(state), path)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Load a ``training_state.pt`` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"training state {str(path)!r} not found",
            fix="point checkpointer.recipe_checkpoint at a training_state.pt, or set resume_from_checkpoint: False",
        )
    state = load_torch_file(path, mmap=False)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{str(path)!r} is not a training state (found {type(state).__name__})", fix="remove it or start fresh"
        )
    return state
