"""The catalogue of bad inputs: each gives one `error:` line that names the thing and the fix, the
documented exit code (2: usage or config, 1: runtime), no traceback, and leaves what was saved
before intact. Config mistakes are refused alike by `tune validate` and by `tune run`.

Everything runs in-process through the `tune` entry point (`tuner.cli.main.main`) on a tiny model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.recipes.helpers import (
    checkpointer_node,
    model_node,
    tiny_checkpoint_fixture,
    write_config,
)
from tuner.cli.main import main

LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "lora_rank": 4, "lora_alpha": 8}
RECIPE = "lora_finetune_single_device"


def tune(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: 'nothing saved was damaged' means equal snapshots."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_error(err: str, *needles: str) -> str:
    """One `error:` line (plus the lines of a problem list), no traceback; returns the error text."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    text = err[err.index("error:") :]
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def run_finished(capsys, finished, *overrides: str) -> tuple[int, str, str]:
    """`tune run` of the finished run's config with ``overrides`` (exit code, stdout, stderr); whatever
    happens, the finished run's saved files are left as they were."""
    config, out = finished
    before = snapshot(out)
    code, stdout, err = tune(capsys, "run", RECIPE, "--config", str(config), *overrides)
    assert snapshot(out) == before
    return code, stdout, err


ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


@pytest.fixture(scope="module")
def finished(ckpt, tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny LoRA run (rank 4, 2 steps): its config and output folder."""
    folder = tmp_path_factory.mktemp("bad_inputs_run")
    out = folder / "out"
    config = write_config(folder / "run.yaml", ckpt, out, lora=LORA, max_steps_per_epoch=2, batch_size=2)
    assert main(["run", RECIPE, "--config", str(config)]) == 0
    assert (out / "step_2" / "CHECKPOINT_COMPLETE").is_file()
    return config, out


# ---- config mistakes: `tune validate` and `tune run` refuse them alike, before anything is built ----------
CONFIG_MISTAKES = [
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not valid; it must be a number >= 0"),
    (
        ["optimizer.betas=[1.5, 0.9]"],
        "optimizer.betas=[1.5, 0.9] is not valid; it must be a list of two numbers each >= 0 and < 1",
    ),
    (["optimizer.eps=0"], "optimizer.eps=0 is not valid; it must be a number > 0"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 is not valid"),
    (["gradient_accumulation_steps=0"], "gradient_accumulation_steps=0 is not valid; it must be an integer >= 1"),
    (["batch_size=2.5"], "batch_size=2.5 is not valid; it must be an integer >= 1"),
    (["epochs=0"], "epochs=0 is not valid"),
    (["max_steps_per_epoch=0"], "max_steps_per_epoch=0 is not valid; it must be an integer >= 1 (or null)"),
    (["shuffle=maybe"], "shuffle='maybe' is not valid; it must be true or false"),
    (["dtype=fp8"], "dtype='fp8' is not valid; it must be one of bf16, fp32, fp16"),
    (["save_every_n_step=5"], "unknown config key 'save_every_n_step'; did you mean 'save_every_n_steps'?"),
    (["nonexistent_key=1"], "unknown config key 'nonexistent_key'"),
    (
        ["model.lora_rankk=4"],
        "model.lora_rankk: lora_smollm2() got an unexpected argument 'lora_rankk'; did you mean 'lora_rank'?",
    ),
    (["model.lora_rank=abc"], "model.lora_rank='abc' is not valid; it must be an integer >= 1"),
    (["model.lora_alpha=0"], "model.lora_alpha=0 is not valid; it must be a number > 0"),
    (["model.lora_dropout=1.5"], "model.lora_dropout=1.5 is not valid; it must be a number >= 0 and < 1"),
    (
        ["model.use_rslora=yes please"],
        "model.use_rslora='yes please' does not fit lora_smollm2()'s parameter use_rslora: bool",
    ),
    (["lora_plus_ratio=-2"], "lora_plus_ratio=-2 is not valid; it must be a number > 0"),
    (
        ["optimizer_in_bwd=True", "gradient_accumulation_steps=2"],
        "optimizer_in_bwd=True needs gradient_accumulation_steps=1",
    ),
    (["mlp_chunk_size=0"], "mlp_chunk_size=0 is not valid; it must be an integer >= 1 (or null)"),
    (["mlp_chunk_size=4096", "compile=True"], "mlp_chunk_size=4096 (the sequence-tiled MLP) runs eagerly"),
    (["model._component_=tuner.models.smollm2.lora_smollm3"], "did you mean 'tuner.models.smollm2.lora_smollm2'?"),
    (["optimizer._component_=torch.optim.AdamX"], "unknown component 'torch.optim.AdamX'"),
    (["tokenizer.max_seq_len=0"], "tokenizer.max_seq_len=0 is not valid"),
    (["~optimizer"], "optimizer is missing; the recipe needs it"),
    (["dataset.train_on_input=sometimes"], "dataset.train_on_input='sometimes' does not fit"),
    (["model.base_dtype=fp16"], "model.base_dtype='fp16' does not fit"),
    (["model.fp8_output=sometimes"], "model.fp8_output='sometimes' does not fit"),
]


@pytest.mark.parametrize("overrides,message", CONFIG_MISTAKES, ids=[" ".join(c[0]) for c in CONFIG_MISTAKES])
def test_config_mistake_is_refused_by_validate_and_run_alike(capsys, finished, overrides, message):
    config, out = finished
    before = snapshot(out)
    code, _, err = tune(capsys, "validate", str(config), *overrides)
    assert code == 2, err
    from_validate = assert_one_error(err, message)
    code, stdout, err = tune(capsys, "run", RECIPE, "--config", str(config), *overrides)
    assert code == 2, err
    from_run = assert_one_error(err, message)
    assert message in from_validate and message in from_run
    assert "[tuner] LoRA:" not in stdout  # refused before any model was built
    assert snapshot(out) == before


def test_unclosed_list_override_is_one_clear_line(capsys, finished):
    config, out = finished
    for command in (["validate", str(config)], ["run", RECIPE, "--config", str(config)]):
        code, _, err = tune(capsys, *command, "optimizer.betas=[0.9, 0.95")
        assert code == 2
        assert_one_error(
            err, "override optimizer.betas=[0.9, 0.95: the value is not a valid YAML list", "Fix: close the brackets"
        )


def test_validate_passes_what_run_accepts(capsys, finished):
    config, _ = finished
    code, out, err = tune(capsys, "validate", str(config), "optimizer.lr=1e-4", "model.lora_rank=8")
    assert code == 0 and f"well-formed for recipe {RECIPE}" in out, err


def test_validate_finds_the_recipe_of_a_copied_config(capsys, tmp_path):
    code, _, _ = tune(capsys, "cp", "llama3_2/1B_lora_single_device", str(tmp_path / "mine.yaml"))
    assert code == 0
    code, out, err = tune(capsys, "validate", str(tmp_path / "mine.yaml"), "save_every_n_step=3")
    assert code == 2 and "did you mean 'save_every_n_steps'" in err  # the `tune run` comment names the recipe
    code, out, _ = tune(
        capsys, "validate", str(tmp_path / "mine.yaml"), "--recipe", "full_finetune_single_device", "lora_plus_ratio=4"
    )
    assert code == 2


# ---- runtime failures ----------------------------------------------------------------------------------
def test_resume_with_another_lora_rank_names_both_ranks(capsys, finished):
    code, _, err = run_finished(
        capsys, finished, "resume_from_checkpoint=True", "max_steps_per_epoch=4", "model.lora_rank=8"
    )
    assert code == 1
    text = assert_one_error(
        err,
        "the adapter checkpoint does not fit the model",
        "shape mismatch",
        "the adapter was trained with lora_rank=4; this run builds lora_rank=8",
        "Fix: resume with the lora_* settings of the run that saved the adapter",
    )
    assert "load_state_dict" not in text and "size mismatch for" not in text


def test_truncated_adapter_in_generate_names_the_file(capsys, finished, ckpt, tmp_path):
    _, out = finished
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in (out / "step_2" / "adapter").iterdir():
        data = f.read_bytes()
        (adapter / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".safetensors" else data)
    gen = tmp_path / "gen.yaml"
    gen.write_text(
        json.dumps(
            {
                "model": model_node(),
                "tokenizer": {
                    "_component_": "tuner.models.smollm2.smollm2_tokenizer",
                    "path": str(ckpt / "tokenizer.json"),
                },
                "checkpointer": checkpointer_node(ckpt),
                "adapter_dir": str(adapter),
                "prompt": "hi",
                "max_new_tokens": 2,
                "device": "cpu",
            }
        )
    )
    code, _, err = tune(capsys, "run", "generate", "--config", str(gen))
    assert code == 1
    assert_one_error(err, f"cannot read '{adapter / 'adapter_model.safetensors'}'", "truncated")


def test_disk_full_during_a_save_names_the_step_and_the_safe_one(capsys, ckpt, tmp_path, monkeypatch):
    """The second save hits a full disk (writes go to /dev/full, which fails as a full disk does):
    the message says which step failed, that the disk is full, and which step to resume from; that
    step is intact and no half-written folder is left."""
    import torch

    from tuner.checkpoint import training_state

    real, calls = training_state.write_torch_file, []

    def write(obj, path):
        calls.append(path)
        if len(calls) < 2:
            return real(obj, path)
        with open("/dev/full", "wb") as f:
            torch.save(obj, f)
            f.flush()

    monkeypatch.setattr(training_state, "write_torch_file", write)
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "run.yaml", ckpt, out, lora=LORA, max_steps_per_epoch=3, batch_size=2, save_every_n_steps=1
    )
    code, _, err = tune(capsys, "run", RECIPE, "--config", str(config))
    assert code == 1
    assert_one_error(
        err,
        "could not save checkpoint step_2",
        "the disk is full",
        "step_1",
        "is intact",
        "resume_from_checkpoint=True",
        "Fix: free disk space",
    )
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("step_", ".tmp"))) == ["step_1"]
    assert (out / "step_1" / "CHECKPOINT_COMPLETE").is_file()


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(capsys, finished):
    config, out = finished
    before = snapshot(out)
    logs = sorted((out / "logs").iterdir())
    code, stdout, err = tune(capsys, "run", RECIPE, "--config", str(config), "resume_from_checkpoint=True")
    assert code == 0, err
    assert "nothing to train: the checkpoint at step 2 already finished this run" in stdout
    assert "before fine-tuning" not in stdout and "resumed from" not in stdout
    assert sorted((out / "logs").iterdir()) == logs
    assert snapshot(out) == before


def test_resume_with_more_steps_per_epoch_continues_the_cut_epoch(capsys, ckpt, tmp_path):
    """A run cut at 2 steps per epoch, resumed with 4, trains steps 3-4 of the same epoch, exactly as a
    4-step run does."""
    from tests.recipes.helpers import logged_losses

    sample = {"prompts": ["Say hi."], "max_new_tokens": 2}
    short = write_config(
        tmp_path / "short.yaml",
        ckpt,
        tmp_path / "cut",
        lora=LORA,
        max_steps_per_epoch=2,
        batch_size=2,
        sample_generation=sample,
    )
    straight = write_config(
        tmp_path / "long.yaml", ckpt, tmp_path / "straight", lora=LORA, max_steps_per_epoch=4, batch_size=2
    )
    assert tune(capsys, "run", RECIPE, "--config", str(short))[0] == 0
    code, stdout, err = tune(
        capsys, "run", RECIPE, "--config", str(short), "resume_from_checkpoint=True", "max_steps_per_epoch=4"
    )
    assert code == 0, err
    assert "resuming at step 2" in stdout and "[resumed from step 2]" in stdout and "[after fine-tuning]" in stdout
    assert tune(capsys, "run", RECIPE, "--config", str(straight))[0] == 0
    assert logged_losses(tmp_path / "cut") == logged_losses(tmp_path / "straight")


# ---- the command line itself ---------------------------------------------------------------------------
def test_bare_tune_prints_help_and_succeeds(capsys):
    code, out, err = tune(capsys)
    assert code == 0 and "Usage: tune" in out and "Traceback" not in err and not err


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["nosuchcommand"], 2, "No such command 'nosuchcommand'"),
        (["validate"], 2, "Missing argument 'config'"),
        (["ls", "--bad"], 2, "No such option: --bad"),
        (["run"], 2, "no recipe given"),
        (["run", "nosuchrecipe", "--config", "x"], 2, "unknown recipe 'nosuchrecipe'"),
        (["run", RECIPE], 2, "no config given"),
        (["run", RECIPE, "--config", "smollm2/135M_lora_cpux"], 2, "did you mean 'smollm2/135M_lora_cpu'?"),
        (["run", RECIPE, "--config", "/nonexistent/x.yaml"], 2, "config file not found"),
        (["cp", "nosuch", "x"], 2, "no built-in recipe or config named 'nosuch'"),
    ],
)
def test_command_line_mistakes_exit_2(capsys, args, code, needle):
    got, _, err = tune(capsys, *args)
    assert got == code, err
    assert_one_error(err, needle, "Fix:")


def test_bad_yaml_names_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  _component_: x\n lr: [1, 2\n")
    for command in (["validate", str(bad)], ["run", RECIPE, "--config", str(bad)]):
        code, _, err = tune(capsys, *command)
        assert code == 2
        assert_one_error(err, f"invalid YAML in {bad}", "line")


def test_wrong_model_size_for_the_checkpoint_is_a_runtime_error_with_shapes(capsys, finished):
    out = finished[1]
    code, _, err = run_finished(
        capsys,
        finished,
        "output_dir=" + str(out.parent / "other"),
        "checkpointer.output_dir=" + str(out.parent / "other"),
        "model.embed_dim=32",
    )
    assert code == 1
    assert_one_error(err, "the checkpoint does not fit the model", "shape mismatch", "Fix:")


def test_malformed_dataset_row_names_row_and_column(capsys, finished, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}]))
    code, _, err = run_finished(
        capsys,
        finished,
        f"dataset.data_files={rows}",
        f"output_dir={tmp_path / 'o'}",
        f"checkpointer.output_dir={tmp_path / 'o'}",
    )
    assert code == 1
    assert_one_error(err, "output")


def test_hub_dataset_offline_fails_at_once(capsys, finished, tmp_path, monkeypatch):
    """A dataset that needs the Hub, with the Hub unreachable: one line saying so and what to use."""
    import tuner.hub

    monkeypatch.setattr(tuner.hub, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr("tuner.datasets._loading.hub_reachable", lambda: False)
    code, _, err = run_finished(
        capsys,
        finished,
        "dataset._component_=tuner.datasets.alpaca_cleaned_dataset",
        "~dataset.source",
        "~dataset.data_files",
        "~dataset.split",
        f"output_dir={tmp_path / 'o'}",
        f"checkpointer.output_dir={tmp_path / 'o'}",
    )
    assert code == 1
    assert_one_error(err, "comes from the Hugging Face Hub, which cannot be reached", "dataset.source=json")


@pytest.mark.parametrize(
    "keys, fix",
    [
        # Offloaded checkpoints back-propagate each layer in a nested backward, which FSDP2 does not follow.
        (
            ("enable_activation_checkpointing=True", "enable_activation_offloading=True"),
            "set enable_activation_offloading=False",
        ),
        # ac_mode (torchtune's distributed key) turns checkpointing on by itself.
        (("ac_mode=full", "enable_activation_offloading=True"), "set enable_activation_offloading=False"),
        (
            ("ac_mode=selective", "ac_option=2", "enable_activation_offloading=True"),
            "set enable_activation_offloading=False",
        ),
        # FSDP2 shards the output projection; fp8_output's FP8 copy needs it whole.
        (("model.base_dtype=fp8", "model.fp8_output=True"), "drop model.fp8_output with the distributed recipes"),
    ],
)
def test_what_fsdp2_cannot_do_is_one_clear_error_in_run_and_validate(capsys, finished, keys, fix):
    config, out = finished
    before = snapshot(out)
    code, _, err = tune(capsys, "run", "lora_finetune_distributed", "--config", str(config), *keys)
    assert code == 2 and snapshot(out) == before
    assert_one_error(err, "FSDP2", fix)
    code, _, err = tune(capsys, "validate", str(config), *keys, "--recipe", "lora_finetune_distributed")
    assert code == 2 and "FSDP2" in err and fix in err
    code, _, _ = tune(capsys, "validate", str(config), *keys, "--recipe", "lora_finetune_single_device")
    assert code == 0  # one device takes them
