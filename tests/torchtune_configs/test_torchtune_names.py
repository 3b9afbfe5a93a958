"""What a torchtune user's config meets in tuner besides the shipped configs: any (logits, labels)
loss, torchtune's profiler node, torchtune-only keys (a note, or an error with the fix for a value
tuner cannot honour), torchtune's recipe and config names, ``should_load_recipe_state``."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.recipes.helpers import logged_losses, tiny_checkpoint_fixture, write_config
from tuner.cli.run import run_recipe
from tuner.errors import CheckpointError

LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": True, "lora_rank": 4, "lora_alpha": 8}


ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


def _run(recipe: str, ckpt: Path, out: Path, capsys, **overrides) -> tuple[int, str]:
    lora = LORA if recipe.startswith("lora") else None
    path = write_config(
        out.parent / f"{out.name}.yaml", ckpt, out, lora=lora, **{"max_steps_per_epoch": 2, **overrides}
    )
    code = run_recipe([recipe, "--config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---- losses -------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["full_finetune_single_device", "lora_finetune_single_device"])
def test_any_logits_labels_loss_trains_with_the_default_losses_numbers(recipe, ckpt, tmp_path, capsys):
    """torch.nn.CrossEntropyLoss and a torchtune-style chunked loss (list of chunks, a mean, no
    ``reduction``) train through the recipe and give the memory-lean default's losses."""
    losses = {}
    for name, node in {
        "default": {"_component_": "tuner.training.loss.ChunkedCrossEntropyLoss", "num_output_chunks": 4},
        "torch_ce": {"_component_": "torch.nn.CrossEntropyLoss", "ignore_index": -100},
        "chunked_mean": {
            "_component_": "tests.torchtune_configs.losses_for_tests.ChunkedOutputCE",
            "num_output_chunks": 4,
        },
    }.items():
        code, text = _run(recipe, ckpt, tmp_path / name, capsys, loss=node)
        assert code == 0, text[-3000:]
        losses[name] = logged_losses(tmp_path / name)
    assert sorted(losses["default"]) == [1, 2]
    for name in ("torch_ce", "chunked_mean"):
        assert losses[name][1] == pytest.approx(losses["default"][1], abs=1e-5), name
        assert losses[name][2] == pytest.approx(losses["default"][2], abs=1e-4), name
    assert losses["default"][2] != losses["default"][1]  # the step trained


@pytest.mark.parametrize(
    "node, message",
    [
        (
            {"_component_": "torch.nn.TripletMarginLoss"},
            r"loss\._component_ torch\.nn\.TripletMarginLoss cannot be called as loss\(logits, labels\)",
        ),
        (
            {"_component_": "tests.torchtune_configs.losses_for_tests.PerTokenCE"},
            r"loss\._component_ tests\.torchtune_configs\.losses_for_tests\.PerTokenCE "
            r"returned \(\d+,\), not one number",
        ),
    ],
)
def test_a_loss_tuner_cannot_use_is_one_error_naming_it(node, message, ckpt, tmp_path, capsys):
    code, text = _run("full_finetune_single_device", ckpt, tmp_path / "bad", capsys, loss=node, batch_size=2)
    assert code == 2
    assert re.search("error: " + message, text) and "Traceback" not in text, text[-2000:]


# ---- profiler -----------------------------------------------------------------------------------
def test_torchtune_profiler_node_writes_a_chrome_trace(ckpt, tmp_path, capsys):
    profiler = {
        "_component_": "torchtune.training.setup_torch_profiler",
        "enabled": True,
        "output_dir": str(tmp_path / "prof"),
        "cpu": True,
        "cuda": True,
        "profile_memory": False,
        "with_stack": False,
        "record_shapes": True,
        "with_flops": False,
        "wait_steps": 0,
        "warmup_steps": 1,
        "active_steps": 1,
        "num_cycles": 1,
    }
    code, text = _run("full_finetune_single_device", ckpt, tmp_path / "out", capsys, profiler=profiler)
    assert code == 0, text[-3000:]
    traces = list((tmp_path / "prof" / "iteration_2").glob("*.pt.trace.json.gz"))
    assert len(traces) == 1, list((tmp_path / "prof").rglob("*"))
    trace = json.loads(gzip.decompress(traces[0].read_bytes()))  # what Perfetto and TensorBoard read
    names = {e.get("name", "") for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert any("linear" in n or "addmm" in n or "mm" == n.split("::")[-1] for n in names), sorted(names)[:20]
    assert (tmp_path / "prof" / "iteration_2" / "rank0_key_averages.txt").read_text().strip()


def test_disabled_profiler_is_a_dummy_and_settings_come_back():
    from tuner.training import setup_torch_profiler
    from tuner.training.profiler import DummyProfiler

    prof, settings = setup_torch_profiler(enabled=False)
    assert isinstance(prof, DummyProfiler) and settings == {"enabled": False}


# ---- keys ---------------------------------------------------------------------------------------
def test_torchtune_only_keys_are_noted_once_each(capsys):
    from tuner.config.settings import read_settings
    from tuner.training.settings import FullSettings, TrainingSettings

    cfg = OmegaConf.create(
        {
            "output_dir": "/tmp/x",
            "model": {"_component_": "torch.nn.Identity"},
            "tokenizer": {"_component_": "torch.nn.Identity"},
            "checkpointer": {"_component_": "torch.nn.Identity"},
            "dataset": {"_component_": "torch.nn.Identity"},
            "optimizer": {"_component_": "torch.nn.Identity"},
            "low_cpu_ram": False,
            "tensor_parallel_dim": 1,
            "custom_sharded_layers": ["tok_embeddings", "output"],
        }
    )
    read_settings(cfg, TrainingSettings, FullSettings)
    lines = capsys.readouterr().err.splitlines()
    assert sorted(line.split(" is a ")[0] for line in lines) == [
        "[tuner] note: custom_sharded_layers",
        "[tuner] note: low_cpu_ram",
        "[tuner] note: tensor_parallel_dim",
    ]
    assert all(" is a torchtune key tuner does not need: " in line for line in lines)


@pytest.mark.parametrize(
    "key, value, fix",
    [
        ("tensor_parallel_dim", 2, "set tensor_parallel_dim=1"),
        ("quantizer", {"_component_": "x"}, "set quantizer=null"),
    ],
)
def test_a_torchtune_value_tuner_cannot_honour_is_an_error_with_the_fix(key, value, fix):
    from tuner.config.settings import check_config
    from tuner.generation.settings import GenerationSettings, InferenceSettings

    problems = check_config(OmegaConf.create({key: value}), [InferenceSettings, GenerationSettings])
    assert any(p.startswith(f"{key}=") and "asks for what tuner cannot do" in p and fix in p for p in problems), (
        problems
    )


def test_a_typo_is_still_an_error():
    from tuner.config.settings import check_config
    from tuner.training.settings import FullSettings, TrainingSettings

    problems = check_config(OmegaConf.create({"low_cpu_rams": True}), [TrainingSettings, FullSettings])
    assert "unknown config key 'low_cpu_rams'; did you mean 'low_cpu_ram'?" in problems


# ---- names --------------------------------------------------------------------------------------
def test_torchtunes_recipe_and_config_names_resolve():
    from tuner.registry import resolve_config, resolve_recipe

    path, recipe = resolve_recipe("eleuther_eval")
    assert recipe.name == "eval" and path.name == "eval.py"
    assert resolve_config("generation").name == "generation.yaml"
    assert resolve_config("eleuther_evaluation").name == "eleuther_evaluation.yaml"


def test_torchtune_builder_names_build_the_same_shapes():
    from tuner.models import llama3_1, llama3_3, qwen2_5

    with torch.device("meta"):
        assert llama3_3.llama3_3_70b().state_dict().keys() == llama3_1.llama3_1_70b().state_dict().keys()
        base, instruct = qwen2_5.qwen2_5_14b_base(), qwen2_5.qwen2_5_14b_instruct()
    assert {k: v.shape for k, v in base.state_dict().items()} == {k: v.shape for k, v in instruct.state_dict().items()}
    assert base.norm.eps == 1e-5 and instruct.norm.eps == 1e-6  # as in their config.json files


def test_should_load_recipe_state_resumes(tmp_path, ckpt):
    from tuner.checkpoint import HFCheckpointer

    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        HFCheckpointer(ckpt, ["model.safetensors"], "SMOLLM2", tmp_path / "empty", should_load_recipe_state=True)


def test_named_datasets_map_their_columns(tmp_path):
    """torchtune's named datasets read their columns; a local file stands in for the hub dataset."""
    from tests.data.tiny_tokenizers import write_qwen_files
    from tuner.datasets import samsum_dataset, slimorca_dataset, wikitext_dataset
    from tuner.models.qwen2_5 import qwen2_5_tokenizer

    files = write_qwen_files(tmp_path)
    tok = qwen2_5_tokenizer(files["json"])
    (tmp_path / "samsum.json").write_text(json.dumps([{"dialogue": "A: hi\nB: hello", "summary": "They greet."}] * 2))
    (tmp_path / "orca.json").write_text(
        json.dumps([{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])
    )
    (tmp_path / "wiki.json").write_text(json.dumps([{"page": "Some page text."}]))
    summary = samsum_dataset(tok, source="json", data_files=str(tmp_path / "samsum.json"))[0]
    assert tok.decode([t for t, lb in zip(summary["tokens"], summary["labels"]) if lb != -100]).split() == [
        "assistant",
        "They",
        "greet.",
    ]
    chat = slimorca_dataset(tok, source="json", data_files=str(tmp_path / "orca.json"))[0]
    assert tok.decode([t for t, lb in zip(chat["tokens"], chat["labels"]) if lb != -100]).split() == [
        "assistant",
        "Hello",
    ]
    page = wikitext_dataset(tok, source="json", data_files=str(tmp_path / "wiki.json"), subset=None)[0]
    assert tok.decode(page["tokens"]).strip() == "Some page text."
    (tmp_path / "long.json").write_text(json.dumps([{"page": " ".join(["word"] * 200)}]))
    cut = wikitext_dataset(tok, source="json", data_files=str(tmp_path / "long.json"), subset=None, max_seq_len=32)[0]
    assert len(cut["tokens"]) == 32  # torchtune's max_seq_len: each page is cut to it


def test_mlflow_and_comet_loggers_drive_their_packages(monkeypatch):
    """Against stand-ins for the mlflow and comet_ml interfaces (neither is a test dependency)."""
    import sys
    import types

    from tuner.training.metric_logging import CometLogger, MLFlowLogger

    calls = []
    mlflow = types.ModuleType("mlflow")
    mlflow.is_tracking_uri_set = lambda: False
    mlflow.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    mlflow.active_run = lambda: (
        None if not any(c[0] == "start" for c in calls) or any(c[0] == "end" for c in calls) else "run"
    )
    mlflow.set_experiment = lambda name: calls.append(("experiment", name))
    mlflow.start_run = lambda run_id=None, run_name=None: (
        calls.append(("start", run_name)) or types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))
    )
    mlflow.log_metrics = lambda metrics, step, run_id: calls.append(("metrics", metrics, step, run_id))
    mlflow.log_params = lambda params, run_id: calls.append(("params", params))
    mlflow.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    logger = MLFlowLogger(experiment_name="exp", tracking_uri="file:/tmp/mlruns", run_name="run")
    logger.log_config({"optimizer": {"lr": 1e-4}})
    logger.log_dict({"loss": 1.5}, step=3)
    logger.close()
    assert calls == [
        ("uri", "file:/tmp/mlruns"),
        ("experiment", "exp"),
        ("start", "run"),
        ("params", {"optimizer.lr": 1e-4}),
        ("metrics", {"loss": 1.5}, 3, "r1"),
        ("end",),
    ]

    comet = types.ModuleType("comet_ml")
    experiment = types.SimpleNamespace(
        log_metrics=lambda m, step: calls.append(("comet", m, step)),
        log_parameters=lambda p: calls.append(("comet_params", p)),
        end=lambda: calls.append(("comet_end",)),
    )
    comet.ExperimentConfig = lambda **kw: kw
    comet.start = lambda **kw: (
        calls.append(("comet_start", kw["project"], kw["experiment_config"]["name"])) or experiment
    )
    monkeypatch.setitem(sys.modules, "comet_ml", comet)
    calls.clear()
    logger = CometLogger(project="p", experiment_name="e", log_dir="/ignored")
    logger.log_dict({"loss": 2.0}, step=1)
    logger.close()
    assert calls == [("comet_start", "p", "e"), ("comet", {"loss": 2.0}, 1), ("comet_end",)]


def test_the_migration_page_lists_every_torchtune_only_key():
    from tuner.config.torchtune_keys import TORCHTUNE_KEYS

    page = (Path(__file__).resolve().parents[2] / "docs" / "torchtune.md").read_text()
    assert [k for k in TORCHTUNE_KEYS if f"| `{k}`" not in page] == []
