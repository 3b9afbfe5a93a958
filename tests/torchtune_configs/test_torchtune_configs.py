"""torchtune 0.6.1's own configs, renamed ``torchtune.`` -> ``tuner.``, validate and run in tuner.

Every config torchtune 0.6.1 ships for the recipes tuner has, in the families tuner has, is
vendored unchanged under ``configs/`` (``recipes.json``: config -> recipe, from torchtune's registry;
``refresh.py`` re-vendors). Each test reads one, applies the rename in memory, runs the checks
``tune validate`` and the recipe's key check run, then shrinks it to a tiny model by overrides and
runs it through ``tune run``'s in-process path: training configs train two optimizer steps on CPU
(distributed ones as one process through the same recipe, gloo with one rank) and save a
checkpoint; generation configs generate; eval configs score a dataset.

In scope: recipes full_finetune_single_device, full_finetune_distributed, lora_finetune_single_device,
lora_finetune_distributed (QLoRA and DoRA configs included), lora_dpo_single_device,
lora_dpo_distributed, full_dpo_distributed, generate, eleuther_eval; families gemma2,
llama2, llama3, llama3_1, llama3_2, llama3_3, mistral, phi3, qwen2_5; plus generation.yaml and
eleuther_evaluation.yaml.

Out of scope, and why:
- PPO, knowledge-distillation and QAT configs: their recipes (ppo_full_finetune_single_device,
  knowledge_distillation_*, qat_*) are not tuner recipes.
- llama3_2_vision configs: tuner has no vision models.
- dev/ configs and llama3*/70B_generation_distributed (dev/generate_v2*, early exit, multi-dataset
  recipes) and quantization.yaml (the quantize recipe): recipes tuner does not have.
- code_llama2, gemma (Gemma 1), qwen2, phi4: families tuner does not have.

The overrides, the only changes made to a config (anything else a config needs to run is a tuner
bug, fixed in tuner, not overridden here):
- ``output_dir``: the test's tmp_path (a path).
- ``model._component_`` and the dimensions: the family's component builder (``lora_``/``qlora_``
  kept) with the tiny checkpoint's dimensions (sizes); the config's LoRA keys are kept.
- ``tokenizer.path`` (and Qwen's ``merges_file``): a tiny tokenizer of the config's kind, written by
  the test (paths); ``tokenizer.max_seq_len=64`` (a size).
- ``checkpointer.checkpoint_dir`` and ``checkpoint_files``: the tiny checkpoint of the family, in
  the config's format (HF, or Meta's consolidated.00.pth for FullModelMetaCheckpointer) (paths).
- ``dataset.source=json``, ``data_files``, ``split=train``: tuner's quickstart instruction data
  (alpaca columns, in the package) instead of a hub download (paths); for the DPO configs the same
  rows as preference pairs in Stack Exchange Paired's columns, written by the test. Full DPO's
  ``ref_checkpointer`` gets the checkpoint paths the ``checkpointer`` gets.
- ``device=cpu``, ``dtype=fp32``.
- Training: ``batch_size=2``, ``gradient_accumulation_steps=1``, ``epochs=1``,
  ``max_steps_per_epoch=2`` (sizes, step counts: the configs accumulate up to 16 micro-batches a
  step, which would make two steps 32 forward/backward passes; tests/training covers accumulation).
- Generation: ``max_new_tokens=4`` (a size), ``output_file`` to read the answer back (a path).
- eleuther_eval: lm-evaluation-harness is not a test dependency and its tasks download their data,
  so ``tasks`` is removed and a local ``dataset`` (the same alpaca-format file) is scored instead, with
  ``max_batches=2`` (a step count); the config's own keys (``max_seq_length``, ``enable_kv_cache``,
  ``quantizer: null``, ``limit``, ``batch_size``) are read as they are.
"""

from __future__ import annotations

import json
import re
import socket
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from tests.real_data import ALPACA, preference_rows
from tuner.cli.main import main
from tuner.cli.run import run_recipe
from tuner.config import load_config
from tuner.training.metric_logging import parse_step_lines

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
RECIPES: dict[str, str] = json.loads((HERE / "recipes.json").read_text())
MAX_SEQ_LEN = 64
DPO = {"lora_dpo_single_device", "lora_dpo_distributed", "full_dpo_distributed"}
TRAINING = {
    "full_finetune_single_device",
    "full_finetune_distributed",
    "lora_finetune_single_device",
    "lora_finetune_distributed",
    *DPO,
}
# The config family's tiny HF model (tests/models/hf_tiny.py); Llama 3.3 is the Llama 3.1 architecture.
HF_FAMILY = {"llama3_3": "llama3_1"}


def renamed_config(name: str, tmp_path: Path) -> Path:
    """The vendored config with ``torchtune.`` renamed to ``tuner.`` (as ``sed`` would), in tmp_path."""
    text = (CONFIGS / name).read_text()
    path = tmp_path / "config.yaml"
    path.write_text(re.sub(r"torchtune\.", "tuner.", text))
    return path


def family_of(cfg) -> str:
    """The tuner.models family of the config's model builder."""
    return str(cfg.model._component_).split(".")[2]


# ---- tiny assets, built once per kind ---------------------------------------------------------------
_ROOT: list[Path] = []  # the module's asset folder (tmp_path_factory), set by the `assets` fixture


def _assets_root() -> Path:
    return _ROOT[0]


@lru_cache(maxsize=None)
def tokenizer_files(kind: str) -> dict[str, str]:
    """Tokenizer files for a tokenizer builder's kind, in the layout the real model folders have."""
    from tests.data.tiny_tokenizers import (
        write_phi3_json,
        write_qwen_files,
        write_sp_model,
        write_tiktoken_ranks,
    )

    folder = _assets_root() / f"tok_{kind}"
    folder.mkdir()
    if kind == "llama3_tokenizer":
        return {"path": write_tiktoken_ranks(folder / "tokenizer.model")}
    if kind in ("llama2_tokenizer", "mistral_tokenizer"):
        return {"path": write_sp_model(folder / "tokenizer.model")}
    if kind == "gemma_tokenizer":
        return {"path": write_sp_model(folder / "tokenizer.model", gemma=True)}
    if kind == "phi3_mini_tokenizer":  # Phi-3's folder: tokenizer.model and tokenizer.json (chat tokens added)
        sp = write_sp_model(folder / "tokenizer.model")
        write_phi3_json(folder / "tokenizer.json", sp)
        return {"path": sp}
    if kind == "qwen2_5_tokenizer":
        files = write_qwen_files(folder)
        return {"path": files["vocab"], "merges_file": files["merges"]}
    raise AssertionError(f"no tiny tokenizer for {kind}")


@lru_cache(maxsize=None)
def vocab_size(component: str) -> int:
    """The vocabulary of the tiny tokenizer of ``component``: the model's, as in the real checkpoints."""
    from tuner.config import instantiate

    tok = instantiate({"_component_": component, **tokenizer_files(component.rsplit(".", 1)[1])})
    return max(tok.vocab_size, max(tok.special_tokens.values(), default=0) + 1)


@lru_cache(maxsize=None)
def hf_checkpoint(family: str, vocab: int) -> tuple[Path, dict]:
    """A tiny random HF checkpoint of ``family`` (transformers' save_pretrained) and its config."""
    from tests.models.hf_tiny import tiny_hf_model

    model, config, _ = tiny_hf_model(HF_FAMILY.get(family, family), vocab_size=vocab)
    folder = _assets_root() / f"hf_{family}_{vocab}"
    model.save_pretrained(folder, safe_serialization=True)
    return folder, config


@lru_cache(maxsize=None)
def meta_checkpoint(family: str, vocab: int) -> Path:
    """The same weights in Meta's format (consolidated.00.pth + params.json), through tuner's conversion."""
    from safetensors.torch import load_file

    from tuner.checkpoint.hf_keys import hf_to_tuner
    from tuner.checkpoint.meta_keys import tuner_to_meta

    hf_folder, config = hf_checkpoint(family, vocab)
    model_type = "LLAMA3"
    tuner_sd = hf_to_tuner(load_file(hf_folder / "model.safetensors"), model_type, config)
    meta = tuner_to_meta(tuner_sd, config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"])
    folder = _assets_root() / f"meta_{family}_{vocab}"
    folder.mkdir()
    torch.save(meta, folder / "consolidated.00.pth")
    params = {
        "dim": config["hidden_size"],
        "n_layers": config["num_hidden_layers"],
        "n_heads": config["num_attention_heads"],
        "n_kv_heads": config["num_key_value_heads"],
        "vocab_size": vocab,
        "norm_eps": config["rms_norm_eps"],
        "rope_theta": 500_000.0,
    }
    (folder / "params.json").write_text(json.dumps(params))
    return folder


# ---- the overrides ------------------------------------------------------------------------------------
def model_overrides(cfg) -> list[str]:
    """The family's component builder (keeping lora_/qlora_) with the tiny checkpoint's dimensions."""
    from tuner.checkpoint.hf_config import builder_kwargs_from_hf_config

    family = family_of(cfg)
    builder = str(cfg.model._component_).rsplit(".", 1)[1]
    prefix = next((p for p in ("qlora_", "lora_") if builder.startswith(p)), "")
    _, config = hf_checkpoint(family, vocab_size(str(cfg.tokenizer._component_)))
    dims = builder_kwargs_from_hf_config(config, str(cfg.checkpointer.model_type))
    dims.pop("_component_")
    out = [f"model._component_=tuner.models.{family}.{prefix}{family}"]
    return out + [f"model.{k}={json.dumps(v)}" for k, v in dims.items()]


def asset_overrides(cfg) -> list[str]:
    family = family_of(cfg)
    kind = str(cfg.tokenizer._component_).rsplit(".", 1)[1]
    out = [f"tokenizer.{k}={v}" for k, v in tokenizer_files(kind).items()] + [f"tokenizer.max_seq_len={MAX_SEQ_LEN}"]
    vocab = vocab_size(str(cfg.tokenizer._component_))
    if str(cfg.checkpointer._component_).endswith("MetaCheckpointer"):
        ckpt_dir, files = meta_checkpoint(family, vocab), "[consolidated.00.pth]"
    else:
        ckpt_dir, files = hf_checkpoint(family, vocab)[0], "[model.safetensors]"
    for node in ("checkpointer", "ref_checkpointer") if "ref_checkpointer" in cfg else ("checkpointer",):
        out += [f"~{node}.checkpoint_files", f"{node}.checkpoint_dir={ckpt_dir}", f"{node}.checkpoint_files={files}"]
    return out + ["device=cpu", "dtype=fp32"]


def dataset_overrides(recipe: str) -> list[str]:
    """The quickstart rows (alpaca columns), or for DPO the same rows as Stack Exchange Paired pairs."""
    if recipe not in DPO:
        return ["dataset.source=json", f"dataset.data_files={ALPACA}", "dataset.split=train"]
    path = _assets_root() / "stack_exchange_pairs.json"
    if not path.is_file():
        columns = {"question": "prompt", "response_j": "chosen", "response_k": "rejected"}
        path.write_text(json.dumps([{k: r[v] for k, v in columns.items()} for r in preference_rows()]))
    return ["dataset.source=json", f"dataset.data_files={path}", "dataset.split=train"]


@pytest.fixture(scope="module", autouse=True)
def assets(tmp_path_factory):
    """Tiny tokenizers and checkpoints, each built on first use and shared by the module's tests."""
    _ROOT[:] = [tmp_path_factory.mktemp("assets")]
    yield
    for cached in (tokenizer_files, vocab_size, hf_checkpoint, meta_checkpoint):
        cached.cache_clear()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: at these shapes a second thread only adds synchronisation (6x slower per
    matmul on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_rank(monkeypatch):
    """What torchrun would set for a single process (the distributed recipes read it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)


def _run(recipe: str, config: Path, overrides: list[str], capsys) -> str:
    code = run_recipe([recipe, "--config", str(config), *overrides])
    out = capsys.readouterr()
    assert code == 0, f"tune run {recipe} failed ({code}):\n{out.out[-3000:]}\n{out.err[-3000:]}"
    return out.out


def _logged_steps(log_dir: Path) -> dict[int, float]:
    # torchtune's configs log with DiskLogger, which writes torchtune's text lines
    rows = [r for f in sorted(log_dir.glob("*.txt")) for r in parse_step_lines(f.read_text())]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


# ---- the test -----------------------------------------------------------------------------------------
def test_the_vendored_set_is_torchtunes_whole_in_scope_set():
    """recipes.json names every vendored file and nothing else (refresh.py writes both)."""
    on_disk = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))
    assert on_disk == sorted(RECIPES) and len(on_disk) == 95
    assert set(RECIPES.values()) == TRAINING | {"generate", "eleuther_eval"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_torchtune_config_validates_and_runs(name, tmp_path, capsys, one_rank):
    recipe = RECIPES[name]
    path = renamed_config(name, tmp_path)
    cfg = load_config(path)

    # `tune validate` as a user runs it: the recipe comes from the config's `tune run` comment, and the
    # check is the one `tune run` makes (keys, types and ranges, components).
    from tuner.registry import resolve_recipe

    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert f"well-formed for recipe {resolve_recipe(recipe)[1].name}" in capsys.readouterr().out

    out_dir = tmp_path / "out"
    overrides = [f"output_dir={out_dir}", *model_overrides(cfg), *asset_overrides(cfg)]
    if recipe in TRAINING:
        overrides += dataset_overrides(recipe) + [
            "batch_size=2",
            "gradient_accumulation_steps=1",
            "epochs=1",
            "max_steps_per_epoch=2",
        ]
        _run(recipe, path, overrides, capsys)
        losses = _logged_steps(out_dir / "logs")
        assert sorted(losses) == [1, 2] and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
        assert (out_dir / "step_2" / "CHECKPOINT_COMPLETE").is_file()
    elif recipe == "generate":
        answers = tmp_path / "answers.jsonl"
        _run(recipe, path, overrides + ["max_new_tokens=4", f"output_file={answers}"], capsys)
        rows = [json.loads(line) for line in answers.read_text().splitlines()]
        assert len(rows) == 1 and 1 <= len(rows[0]["tokens"]) <= 4, rows
    else:
        dataset = {
            "_component_": "tuner.datasets.alpaca_dataset",
            "source": "json",
            "data_files": str(ALPACA),
            "split": "train",
        }
        out = _run(recipe, path, overrides + ["~tasks", f"dataset={json.dumps(dataset)}", "max_batches=2"], capsys)
        result = json.loads(out.strip().splitlines()[-1])
        assert result["tokens"] > 0 and torch.isfinite(torch.tensor(result["loss"])), result
