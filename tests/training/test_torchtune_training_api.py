"""torchtune's training API on tuner: seeds, dtypes, loggers (MLflow, Comet), profiler,
optimizer-in-backward, activation checkpointing by policy, dropout, checkpoint file patterns."""

from __future__ import annotations

import json
import sys
import types
from unittest import mock

import pytest
import torch
from torch import nn

from tuner import training
from tuner.errors import ConfigError, TrainingError
from tuner.training import metric_logging


def test_set_seed_is_reproducible_and_checks_its_range():
    assert training.set_seed(7) == 7
    a = torch.rand(3)
    training.set_seed(7)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ConfigError, match="Invalid seed value provided: -1"):
        training.set_seed(-1)
    assert 0 <= training.set_seed(None) <= 2**32 - 1


def test_get_dtype_and_param_dtypes():
    assert training.get_dtype(None) is torch.float32
    assert [training.get_dtype(n) for n in training.PRECISION_STR_TO_DTYPE] == [
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
    ]
    assert training.get_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="use one of fp16, bf16, fp32, fp64"):
        training.get_dtype("int8")
    with mock.patch("tuner.training.precision.verify_bf16_support", return_value=False):
        with pytest.raises(RuntimeError, match="bf16 precision was requested but not available"):
            training.get_dtype(torch.bfloat16)
    lin = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="Parameter weight has dtype torch.float32, but expected torch.float16"):
        training.validate_expected_param_dtype(lin.named_parameters(), torch.float16)
    training.validate_expected_param_dtype(
        lin.named_parameters(), torch.float16, exclude_param_names=["weight", "bias"]
    )


def test_stdout_and_disk_loggers(tmp_path, capsys):
    logger = metric_logging.StdoutLogger()
    logger.log("loss", 1.5, step=3)
    logger.log_dict({"loss": 1.25, "lr": 2e-5}, step=4)
    assert capsys.readouterr().out == "Step 3 | loss:1.5\nStep 4 | loss:1.25 lr:2e-05 \n"
    # torchtune's DiskLogger text (values as Python prints them, a tensor as its number), read back
    disk = metric_logging.DiskLogger(log_dir=str(tmp_path))
    disk.log_config({"output_dir": str(tmp_path / "out"), "seed": 3})
    assert not (tmp_path / "out").exists()  # nothing is written before the first line
    disk.log(name="loss", data=torch.tensor(1.5), step=1)
    assert (tmp_path / "out" / metric_logging.CONFIG_FILENAME).is_file()  # torchtune's save_config
    disk.log_dict({"loss": 1.0 / 3, "lr": 2e-5}, step=2)
    disk.close()
    text = disk.path_to_log_file().read_text()
    assert disk.path_to_log_file().suffix == ".txt"
    assert text == "Step 1 | loss:1.5\nStep 2 | loss:0.3333333333333333 lr:2e-05 \n"
    assert metric_logging.parse_step_lines(text) == [
        {"step": 1, "loss": 1.5},
        {"step": 2, "loss": 1.0 / 3, "lr": 2e-5},
    ]
    # tuner's configs' logger: JSON lines, the config beside them
    jsonl = metric_logging.JsonLinesLogger(log_dir=str(tmp_path / "j"), filename="log.jsonl")
    jsonl.log_config({"seed": 3})
    jsonl.log(name="loss", data=torch.tensor(1.5), step=1)
    jsonl.close()
    assert json.loads(jsonl.path_to_log_file().read_text()) == {"step": 1, "loss": 1.5}
    assert json.loads((tmp_path / "j" / "config.json").read_text()) == {"seed": 3}


def test_mlflow_logger_logs_metrics_params_and_the_config(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps its file store behind this switch
    logger = metric_logging.MLFlowLogger(
        experiment_name="tuner-test", tracking_uri=f"file:{tmp_path / 'mlruns'}", run_name="r"
    )
    logger.log("loss", 2.0, step=1)
    logger.log_dict({"loss": 1.0, "lr": 0.5}, step=2)
    logger.log_config({"model": {"rank": 8}, "output_dir": str(tmp_path / "out")})
    run_id = logger._run_id
    logger.close()
    assert mlflow.active_run() is None
    run = mlflow.get_run(run_id)
    assert run.data.metrics == {"loss": 1.0, "lr": 0.5} and run.data.params["model.rank"] == "8"
    artifacts = mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path=str(tmp_path / "out").lstrip("/"))
    assert [a.path.rsplit("/", 1)[-1] for a in artifacts] == ["tuner_config.yaml"]


def test_comet_logger_calls_comet(monkeypatch, tmp_path):
    experiment = mock.MagicMock()
    fake = types.SimpleNamespace(start=mock.MagicMock(return_value=experiment), ExperimentConfig=mock.MagicMock())
    monkeypatch.setitem(sys.modules, "comet_ml", fake)
    logger = metric_logging.CometLogger(project="p", experiment_name="e", tags=["t"], log_dir="ignored")
    assert fake.start.call_args.kwargs["project"] == "p"
    fake.ExperimentConfig.assert_called_once_with(log_code=True, tags=["t"], name="e")
    logger.log("loss", 1.0, step=1)
    logger.log_dict({"lr": 0.1}, step=2)
    logger.log_config({"a": 1, "output_dir": str(tmp_path)})
    logger.close()
    experiment.log_metric.assert_called_once_with("loss", 1.0, step=1)
    experiment.log_metrics.assert_called_once_with({"lr": 0.1}, step=2)
    experiment.log_parameters.assert_called_once_with({"a": 1, "output_dir": str(tmp_path)})
    assert experiment.log_asset.call_args.kwargs["file_name"] == "tuner_config.yaml"
    experiment.end.assert_called_once()


@pytest.mark.parametrize("name, package", [("MLFlowLogger", "mlflow"), ("CometLogger", "comet_ml")])
def test_missing_service_package_is_a_config_error(monkeypatch, name, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(ConfigError, match=f"{name} needs the {package} package.*pip install 'tuner\\["):
        getattr(metric_logging, name)()


def test_profiler_setup(tmp_path):
    profiler, cfg = training.setup_torch_profiler(enabled=False)
    assert isinstance(profiler, training.DummyProfiler) and cfg == {"enabled": False}
    with profiler as p:
        p.step()
    profiler, cfg = training.setup_torch_profiler(
        enabled=True, cuda=False, xpu=False, profile_memory=True, wait_steps=1, output_dir=str(tmp_path / "prof")
    )
    assert profiler.activities == {torch.profiler.ProfilerActivity.CPU}
    assert cfg.with_stack and cfg.record_shapes and cfg.wait_steps == 1
    assert cfg.active_steps == training.DEFAULT_SCHEDULE["active_steps"]


def test_optimizer_in_backward_helpers():
    model = nn.Linear(3, 1)
    optims = {p: torch.optim.SGD([p], lr=0.1) for p in model.parameters()}
    training.register_optim_in_bwd_hooks(model, optims)
    before = model.weight.detach().clone()
    model(torch.ones(2, 3)).sum().backward()
    assert model.weight.grad is None and not torch.equal(before, model.weight)
    wrapper = training.create_optim_in_bwd_wrapper(model, optims)
    state = wrapper.state_dict()
    assert set(state) == {"weight", "bias"} and wrapper.get_optim_key("lr") == 0.1
    with pytest.raises(TrainingError, match="Expected to load optimizer state for params"):
        wrapper.load_state_dict({"weight": state["weight"]})
    with pytest.raises(TrainingError, match="unexpected param extra"):
        wrapper.load_state_dict({**state, "extra": {}})
    wrapper.set_lr_scheduler(torch.optim.lr_scheduler.LambdaLR(optims[model.weight], lambda step: 0.5))
    wrapper.step_lr_scheduler()
    assert all(o.param_groups[0]["lr"] == 0.05 for o in optims.values()) and training.get_lr(wrapper) == 0.05


def test_set_activation_checkpointing_and_disable_dropout():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Dropout(0.3), nn.Linear(2, 2))
    training.set_activation_checkpointing(model, auto_wrap_policy={nn.Linear})
    assert [type(m).__name__ for m in model] == ["CheckpointWrapper", "ReLU", "Dropout", "CheckpointWrapper"]
    assert all(isinstance(m._checkpoint_wrapped_module, nn.Linear) for m in model if isinstance(m, CheckpointWrapper))
    with pytest.warns(UserWarning, match="Found Dropout with value 0.3"):
        training.disable_dropout(model)
    assert model[2].p == 0


def test_checkpoint_file_patterns_and_output_dir_check(tmp_path):
    from tuner.training.checkpointing._utils import check_outdir_not_in_ckptdir, safe_torch_load

    files = training.FormattedCheckpointFiles.from_dict(
        {"filename_format": "model-{}-of-{}.safetensors", "max_filename": "00002"}
    )
    assert files.build_checkpoint_filenames() == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    with pytest.raises(ConfigError, match="`max_filename` must be a string"):
        training.FormattedCheckpointFiles.from_dict({"filename_format": "m-{}-of-{}", "max_filename": 2})
    with pytest.raises(ConfigError, match="not a valid pattern"):
        training.FormattedCheckpointFiles.from_dict({"filename_format": "m.pt", "max_filename": "2"})
    check_outdir_not_in_ckptdir(tmp_path / "ckpt", tmp_path / "out")
    with pytest.raises(ConfigError, match="cannot be the same as or a subdirectory"):
        check_outdir_not_in_ckptdir(tmp_path / "ckpt", tmp_path / "ckpt" / "out")
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert torch.equal(safe_torch_load(tmp_path / "w.pt", weights_only=False)["w"], torch.ones(2))
