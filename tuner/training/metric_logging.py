"""Metric loggers: stdout, disk (JSON lines), TensorBoard, Weights & Biases, Comet, MLflow.

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
        self._file = open(self.path, "a", buffering=1)

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        self._file.write(json.dumps({"step": step, **{k: (float(v) if hasattr(v, "item") else v) for k, v in metrics.items()}}) + "\n")

    def log_config(self, config: Mapping[str, Any]) -> None:
        (self.path.parent / "config.json").write_text(json.dumps(config, indent=2, default=str))

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger(MetricLogger):
    """Scalars to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, organize_logs: bool = True, **kwargs: Any) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TunerError("TensorBoardLogger needs tensorboard", "pip install 'tuner[tensorboard]'") from None
        self._writer = SummaryWriter(log_dir=log_dir, **kwargs)

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

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        self._run.finish()


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return out


class CometLogger(MetricLogger):
    """A Comet experiment (``pip install comet_ml``), with torchtune's arguments: ``api_key``,
    ``workspace``, ``project``, ``experiment_key``, ``mode``, ``online``, ``experiment_name``,
    ``tags``, ``log_code``; other keys go to ``comet_ml.ExperimentConfig``."""

    def __init__(self, api_key: str | None = None, workspace: str | None = None, project: str | None = None,
                 experiment_key: str | None = None, mode: str | None = None, online: bool | None = None,
                 experiment_name: str | None = None, tags: list[str] | None = None, log_code: bool = True,
                 **kwargs: Any) -> None:
        try:
            import comet_ml
        except ImportError:
            raise TunerError("CometLogger needs comet_ml", "pip install comet_ml") from None
        kwargs.pop("log_dir", None)
        self._experiment = comet_ml.start(
            api_key=api_key, workspace=workspace, project=project, experiment_key=experiment_key, mode=mode, online=online,
            experiment_config=comet_ml.ExperimentConfig(log_code=log_code, tags=tags, name=experiment_name, **kwargs))

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        self._experiment.log_metrics(dict(metrics), step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._experiment.log_parameters(dict(config))

    def close(self) -> None:
        self._experiment.end()


class MLFlowLogger(MetricLogger):
    """An MLflow run (``pip install mlflow``), with torchtune's arguments: ``experiment_name``,
    ``tracking_uri``, ``run_id`` (each defaulting to its ``MLFLOW_*`` environment variable) and
    ``run_name``. The config is logged as flat parameters (``optimizer.lr``, ...)."""

    def __init__(self, experiment_name: str | None = None, tracking_uri: str | None = None, run_id: str | None = None,
                 run_name: str | None = None, **_: Any) -> None:
        try:
            import mlflow
        except ImportError:
            raise TunerError("MLFlowLogger needs mlflow", "pip install mlflow") from None
        self._mlflow = mlflow
        tracking_uri = tracking_uri or os.getenv("MLFLOW_TRACKING_URI")
        experiment_name = experiment_name or os.getenv("MLFLOW_EXPERIMENT_NAME")
        self._run_id = run_id or os.getenv("MLFLOW_RUN_ID")
        if tracking_uri is not None and not mlflow.is_tracking_uri_set():
            mlflow.set_tracking_uri(tracking_uri)
        if mlflow.active_run() is None or self._run_id:
            if experiment_name is not None:
                mlflow.set_experiment(experiment_name)  # creates it if needed
            self._run_id = mlflow.start_run(run_id=self._run_id, run_name=run_name).info.run_id

    def log_dict(self, metrics: Mapping[str, Any], step: int) -> None:
        self._mlflow.log_metrics(dict(metrics), step=step, run_id=self._run_id)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._mlflow.log_params(_flatten(config), run_id=self._run_id)

    def close(self) -> None:
        if self._mlflow.active_run():
            self._mlflow.end_run()
