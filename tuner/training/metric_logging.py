"""Metric loggers: stdout, disk (JSON lines), TensorBoard, Weights & Biases.

Each takes ``log_dict(metrics, step)``, ``log_config(cfg)`` and ``close()``. Recipes log from
rank 0 only (see `is_logging_rank`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from tuner.errors import TunerError


def is_logging_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class MetricLogger:
    """Base: no-op logger (use on non-zero ranks)."""

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def log(self, name: str, value: Any, step: int) -> None:
        self.log_dict({name: value}, step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def location(self) -> str | None:
        """Where the metrics go, for the run's start message (None: nowhere worth naming)."""
        return None

    def close(self) -> None:
        pass


class StdoutLogger(MetricLogger):
    """One line per logging step: ``step 12 | loss 1.23 | lr 2e-05 | ...``."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        line = " | ".join([f"step {step}", *(f"{k} {_fmt(v)}" for k, v in metrics.items())])
        print(line, file=self.stream or sys.stdout, flush=True)


class DiskLogger(MetricLogger):
    """JSON lines at ``log_dir/log_<time>.jsonl`` (or ``filename``): one object per step."""

    def __init__(self, log_dir: str, filename: str | None = None, **_: Any) -> None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(log_dir) / (filename or f"log_{int(time.time())}.jsonl")
        # Written at the first step, so a run that fails or trains nothing leaves the folder as it was.
        self._file: Any = None
        self._config: Mapping[str, Any] | None = None

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        if self._file is None:
            if self._config is not None:
                (self.path.parent / "config.json").write_text(json.dumps(self._config, indent=2, default=str))
            self._file = open(self.path, "a", buffering=1)
        self._file.write(json.dumps({"step": step, **{k: (float(v) if hasattr(v, "item") else v) for k, v in metrics.items()}}) + "\n")

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._config = config

    def location(self) -> str | None:
        return str(self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class TensorBoardLogger(MetricLogger):
    """Scalars to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, organize_logs: bool = True, **kwargs: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TunerError("TensorBoardLogger needs tensorboard", "pip install 'tuner[tensorboard]'") from None
        self._writer = SummaryWriter(log_dir=log_dir, **kwargs)

    def location(self) -> str | None:
        return f"TensorBoard events in {self._writer.log_dir}"

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        for k, v in metrics.items():
            self._writer.add_scalar(k, float(v), step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._writer.add_text("config", "```yaml\n" + json.dumps(config, indent=2, default=str) + "\n```")

    def close(self) -> None:
        self._writer.close()


class WandBLogger(MetricLogger):
    """Weights & Biases run (works with ``WANDB_MODE=offline``); logs the config too."""

    def __init__(self, project: str = "tuner", entity: str | None = None, group: str | None = None, log_dir: str | None = None, **kwargs: Any) -> None:
        try:
            import wandb
        except ImportError:
            raise TunerError("WandBLogger needs wandb", "pip install 'tuner[wandb]'") from None
        self._wandb = wandb
        self._run = wandb.init(project=project, entity=entity, group=group, dir=log_dir, **kwargs) if wandb.run is None else wandb.run

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def location(self) -> str | None:
        return f"Weights & Biases run {getattr(self._run, 'url', None) or getattr(self._run, 'dir', '')}".strip()

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        self._run.finish()
