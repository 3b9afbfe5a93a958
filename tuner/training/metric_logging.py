"""Metric loggers: stdout, disk (JSON lines), TensorBoard, Weights & Biases, Comet, MLflow.

Each takes torchtune's calls: ``log(name, data, step)``, ``log_dict(payload, step)``,
``log_config(config)`` and ``close()``. Recipes log from rank 0 only (see `is_logging_rank`).
The optional services (tensorboard, wandb, comet_ml, mlflow) are imported when a logger is built;
a missing one is a ConfigError that names the ``pip install`` to run.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from tuner.errors import ConfigError

CONFIG_FILENAME = "tuner_config.yaml"


def is_logging_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _require(module: str, logger: str, extra: str):
    """Import an optional service's package, or raise a ConfigError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{logger} needs the {module} package, which is not installed",
            f"pip install 'tuner[{extra}]' (or use tuner.training.metric_logging.DiskLogger / StdoutLogger)",
        ) from None


def _as_container(config: Any) -> dict:
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)


def save_config(config: Any) -> Optional[Path]:
    """Write the config as YAML to ``{config.output_dir}/tuner_config.yaml``; its path, or None when
    the config has no ``output_dir`` (torchtune's helper, with tuner's file name)."""
    output_dir = _as_container(config).get("output_dir")
    if output_dir is None:
        return None
    path = Path(output_dir) / CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(_as_container(config)), path)
    return path


def flatten_dict(d: Mapping[str, Any], *, sep: str = ".", parent_key: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{parent_key}{sep}{k}" if parent_key else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, sep=sep, parent_key=key))
        else:
            out[key] = v
    return out


class MetricLogger:
    """Base: no-op logger (use on non-zero ranks). ``log`` is ``log_dict`` of one value."""

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        pass

    def log(self, name: str, data: Any, step: int) -> None:
        self.log_dict({name: data}, step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def location(self) -> str | None:
        """Where the metrics go, for the run's start message (None: nowhere worth naming)."""
        return None

    def close(self) -> None:
        pass


class StdoutLogger(MetricLogger):
    """One line per logging step, as torchtune prints it: ``Step 12 | loss:1.23 lr:2e-05 ``."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def log(self, name: str, data: Any, step: int) -> None:
        print(f"Step {step} | {name}:{_fmt(data)}", file=self.stream or sys.stdout, flush=True)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        line = f"Step {step} | " + "".join(f"{k}:{_fmt(v)} " for k, v in payload.items())
        print(line, file=self.stream or sys.stdout, flush=True)


class DiskLogger(MetricLogger):
    """JSON lines at ``log_dir/log_<time>.jsonl`` (or ``filename``): one object per step."""

    def __init__(self, log_dir: str, filename: str | None = None, **_: Any) -> None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(log_dir) / (filename or f"log_{int(time.time())}.jsonl")
        # Written at the first step, so a run that fails or trains nothing leaves the folder as it was.
        self._file: Any = None
        self._config: Mapping[str, Any] | None = None

    def path_to_log_file(self) -> Path:
        return self.path

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        if self._file is None:
            if self._config is not None:
                (self.path.parent / "config.json").write_text(
                    json.dumps(_as_container(self._config), indent=2, default=str)
                )
            self._file = open(self.path, "a", buffering=1)
        self._file.write(
            json.dumps({"step": step, **{k: (float(v) if hasattr(v, "item") else v) for k, v in payload.items()}})
            + "\n"
        )

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._config = config

    def location(self) -> str | None:
        return str(self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class TensorBoardLogger(MetricLogger):
    """Scalars to TensorBoard event files in ``log_dir`` (in ``log_dir/run_<rank>_<time>`` with
    ``organize_logs``, torchtune's layout); ``self.log_dir`` is where they go."""

    def __init__(self, log_dir: str, organize_logs: bool = True, **kwargs: Any) -> None:
        tensorboard = _require("torch.utils.tensorboard", "TensorBoardLogger", "tensorboard")
        rank = int(os.environ.get("RANK", "0"))
        self.log_dir = os.path.join(log_dir, f"run_{rank}_{time.time()}") if organize_logs else log_dir
        self._writer = tensorboard.SummaryWriter(log_dir=self.log_dir, **kwargs)

    def location(self) -> str | None:
        return f"TensorBoard events in {self.log_dir}"

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        for k, v in payload.items():
            self._writer.add_scalar(k, float(v), global_step=step, new_style=True)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._writer.add_text(
            "config", "```yaml\n" + json.dumps(_as_container(config), indent=2, default=str) + "\n```"
        )

    def close(self) -> None:
        self._writer.close()


class WandBLogger(MetricLogger):
    """Weights & Biases run (works with ``WANDB_MODE=offline``); logs the config too."""

    def __init__(
        self,
        project: str = "tuner",
        entity: str | None = None,
        group: str | None = None,
        log_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        wandb = _require("wandb", "WandBLogger", "wandb")
        self._wandb = wandb
        self._run = (
            wandb.init(project=project, entity=entity, group=group, dir=log_dir, **kwargs)
            if wandb.run is None
            else wandb.run
        )

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        self._run.log(dict(payload), step=step)

    def location(self) -> str | None:
        return f"Weights & Biases run {getattr(self._run, 'url', None) or getattr(self._run, 'dir', '')}".strip()

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(_as_container(config), allow_val_change=True)

    def close(self) -> None:
        self._run.finish()


class CometLogger(MetricLogger):
    """A Comet experiment (``comet_ml.start``); arguments as torchtune's. The API key comes from
    ``api_key`` or Comet's own configuration (``COMET_API_KEY``); ``online=False`` logs offline."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        workspace: Optional[str] = None,
        project: Optional[str] = None,
        experiment_key: Optional[str] = None,
        mode: Optional[str] = None,
        online: Optional[bool] = None,
        experiment_name: Optional[str] = None,
        tags: Optional[list[str]] = None,
        log_code: bool = True,
        **kwargs: Any,
    ) -> None:
        comet_ml = _require("comet_ml", "CometLogger", "comet")
        kwargs.pop("log_dir", None)
        self.experiment = None
        if is_logging_rank():
            self.experiment = comet_ml.start(
                api_key=api_key,
                workspace=workspace,
                project=project,
                experiment_key=experiment_key,
                mode=mode,
                online=online,
                experiment_config=comet_ml.ExperimentConfig(
                    log_code=log_code, tags=tags, name=experiment_name, **kwargs
                ),
            )

    def log(self, name: str, data: Any, step: int) -> None:
        if self.experiment is not None:
            self.experiment.log_metric(name, data, step=step)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        if self.experiment is not None:
            self.experiment.log_metrics(payload, step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.experiment is None:
            return
        self.experiment.log_parameters(_as_container(config))
        path = save_config(config)
        if path is not None:
            self.experiment.log_asset(str(path), file_name=path.name)

    def close(self) -> None:
        if self.experiment is not None:
            self.experiment.end()
            self.experiment = None


class MLFlowLogger(MetricLogger):
    """An MLflow run. ``tracking_uri``, ``experiment_name`` and ``run_id`` default to the
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_RUN_ID`` variables; an active
    run is reused. ``log_config`` logs the config flattened as parameters and as a YAML artifact."""

    def __init__(
        self,
        experiment_name: Optional[str] = None,
        tracking_uri: Optional[str] = None,
        run_id: Optional[str] = None,
        run_name: Optional[str] = None,
    ) -> None:
        self._mlflow = _require("mlflow", "MLFlowLogger", "mlflow")
        tracking_uri = tracking_uri or os.getenv("MLFLOW_TRACKING_URI")
        experiment_name = experiment_name or os.getenv("MLFLOW_EXPERIMENT_NAME")
        self._run_id = run_id or os.getenv("MLFLOW_RUN_ID")
        self._owns_run = False
        if not is_logging_rank():
            return
        if tracking_uri is not None:
            self._mlflow.set_tracking_uri(tracking_uri)
        active = self._mlflow.active_run()
        if active is not None and self._run_id in (None, active.info.run_id):
            self._run_id = active.info.run_id
            return
        if experiment_name is not None:
            self._mlflow.set_experiment(experiment_name)
        run = self._mlflow.start_run(run_id=self._run_id, run_name=run_name)
        self._run_id, self._owns_run = run.info.run_id, True

    def log(self, name: str, data: Any, step: int) -> None:
        if self._mlflow.active_run():
            self._mlflow.log_metric(name, float(data), step=step, run_id=self._run_id)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        if self._mlflow.active_run():
            self._mlflow.log_metrics({k: float(v) for k, v in payload.items()}, step=step, run_id=self._run_id)

    def log_config(self, config: Mapping[str, Any]) -> None:
        if not self._mlflow.active_run():
            return
        self._mlflow.log_params(flatten_dict(_as_container(config)), run_id=self._run_id)
        path = save_config(config)
        if path is not None:
            self._mlflow.log_artifact(str(path), artifact_path=str(path.parent).lstrip("/"), run_id=self._run_id)

    def close(self) -> None:
        if self._owns_run and self._mlflow.active_run():
            self._mlflow.end_run()
            self._owns_run = False
