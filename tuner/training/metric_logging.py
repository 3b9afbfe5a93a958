"""Metric loggers: stdout, disk (torchtune's text lines or JSON lines), TensorBoard, Weights & Biases, Comet, MLflow.

Each takes torchtune's calls: ``log(name, data, step)``, ``log_dict(payload, step)``,
``log_config(config)`` and ``close()``. Recipes log from rank 0 only (see `is_logging_rank`).
The optional services (tensorboard, wandb, comet_ml, mlflow) are imported when a logger is built;
a missing one is a ConfigError that names the ``pip install`` to run.
"""

from __future__ import annotations

import importlib
import json
import os
import re
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
            f"pip install 'tuner[{extra}]' (or use tuner.training.metric_logging.JsonLinesLogger / StdoutLogger)",
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


_STEP_LINE = re.compile(r"^Step (\d+) \| (.*)$")
_STEP_PAIR = re.compile(r"(\w+):(?:tensor\()?([-+]?(?:[0-9.]+(?:[eE][-+]?\d+)?|nan|inf))")


def parse_step_lines(text: str) -> list[dict[str, float]]:
    """Rows ``{"step": N, key: value, ...}`` read back from `DiskLogger` / `StdoutLogger` text, or
    torchtune's (``Step N | k:v k:v``; other lines are skipped; a value torchtune printed as
    ``tensor(x, device=...)`` reads as x)."""
    rows = []
    for line in text.splitlines():
        m = _STEP_LINE.match(line.strip())
        if m:
            row = {k: float(v) for k, v in _STEP_PAIR.findall(m.group(2))}
            row["step"] = int(m.group(1))
            rows.append(row)
    return rows


class _StepLinesLogger(MetricLogger):
    """torchtune's text layout, one line per call: ``log`` writes ``Step 12 | loss:1.23``, ``log_dict``
    ``Step 12 | loss:1.23 lr:2e-05 `` (each pair followed by a space). Subclasses say where a line
    goes (`_write`) and how a value reads (`_value`)."""

    def _value(self, value: Any) -> str:
        return str(value)

    def _write(self, line: str) -> None:
        raise NotImplementedError

    def log(self, name: str, data: Any, step: int) -> None:
        self._write(f"Step {step} | {name}:{self._value(data)}")

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        self._write(f"Step {step} | " + "".join(f"{k}:{self._value(v)} " for k, v in payload.items()))


class StdoutLogger(_StepLinesLogger):
    """One line per logging step, as torchtune prints it: ``Step 12 | loss:1.23 lr:2e-05 `` (floats
    to 6 significant digits)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def _value(self, value: Any) -> str:
        return _fmt(value)

    def _write(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)


class _FileLogger(MetricLogger):
    """A log file at ``log_dir/filename`` (default ``log_<unix time><suffix>``), opened for appending
    at the first line, so a run that fails or trains nothing leaves the folder as it was."""

    SUFFIX = ""

    def __init__(self, log_dir: str, filename: str | None = None, **_: Any) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / (filename or f"log_{int(time.time())}{self.SUFFIX}")
        self._file: Any = None
        self._config: Mapping[str, Any] | None = None  # from log_config, written with the first line

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._config = config

    def _on_open(self) -> None:
        """Runs once, before the first line is written (writes the config where the format keeps it)."""

    def _append(self, line: str) -> None:
        if self._file is None:
            self._on_open()
            self._file = open(self.path, "a", buffering=1)
        self._file.write(line + "\n")

    def path_to_log_file(self) -> Path:
        return self.path

    def location(self) -> str | None:
        return str(self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class DiskLogger(_StepLinesLogger, _FileLogger):
    """torchtune's DiskLogger: its text lines (``Step 12 | loss:1.2345 lr:2e-05 ``, values as Python
    prints them) in ``log_dir/log_<time>.txt`` (or ``filename``); the config of ``log_config`` goes to
    ``output_dir`` (`save_config`) with the first line. Configs written for torchtune get the log torchtune writes;
    tuner's own configs use `JsonLinesLogger`, which tools read back without parsing text."""

    SUFFIX = ".txt"

    def _value(self, value: Any) -> str:
        return str(value.item() if hasattr(value, "item") else value)  # a 0-d tensor reads as its number

    def _write(self, line: str) -> None:
        self._append(line)

    def _on_open(self) -> None:
        if self._config is not None:
            save_config(self._config)


class JsonLinesLogger(_FileLogger):
    """JSON lines in ``log_dir/log_<time>.jsonl`` (or ``filename``): one object per step
    (``{"step": 12, "loss": 1.2345, ...}``), and the config as ``config.json`` beside them.
    tuner's configs log with it; torchtune's `DiskLogger` writes text."""

    SUFFIX = ".jsonl"

    def _on_open(self) -> None:
        if self._config is not None:
            config = json.dumps(_as_container(self._config), indent=2, default=str)
            (self.path.parent / "config.json").write_text(config)

    def log_dict(self, payload: Mapping[str, Any], step: int) -> None:
        values = {k: (float(v) if hasattr(v, "item") else v) for k, v in payload.items()}
        self._append(json.dumps({"step": step, **values}))


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
