"""`tune` commands and their error paths: message text and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tuner.cli.main import main
from tuner.registry import RECIPES, all_configs, recipe_for_config


def run_tune(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = run_tune(capsys, "--version")
    assert code == 0 and out.startswith("tune (tuner) ")


def test_every_command_has_help(capsys):
    for cmd in ("ls", "cp", "cat", "validate", "run", "download"):
        code, out, _ = run_tune(capsys, cmd, "--help")
        assert code == 0, cmd
        assert "Usage: tune " + cmd in out


def test_ls_lists_recipes_and_configs(capsys):
    code, out, _ = run_tune(capsys, "ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RECIPE", "CONFIG"]
    assert any(line.startswith("full_finetune_single_device") for line in lines)
    for cfg in all_configs():
        if recipe_for_config(cfg) is not None and recipe_for_config(cfg).path.is_file():
            assert cfg in out


def test_ls_all_shows_distributed_column(capsys):
    code, out, _ = run_tune(capsys, "ls", "--all")
    assert code == 0 and "DISTRIBUTED" in out.splitlines()[0]


def test_every_config_belongs_to_a_recipe():
    orphans = [c for c in all_configs() if recipe_for_config(c) is None]
    assert not orphans, f"configs whose name matches no recipe suffix: {orphans}"


def test_cp_config_adds_extension_and_refuses_overwrite(capsys, tmp_path):
    name = all_configs()[0]
    code, out, _ = run_tune(capsys, "cp", name, str(tmp_path / "mine"))
    assert code == 0
    dest = tmp_path / "mine.yaml"
    assert dest.read_text() == (Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml").read_text()
    dest.write_text("edited: true\n")
    code, _, err = run_tune(capsys, "cp", name, str(dest))
    assert code == 2
    assert f"error: {dest} already exists" in err and "--force" in err
    assert dest.read_text() == "edited: true\n"  # nothing saved is damaged
    code, _, _ = run_tune(capsys, "cp", name, str(dest), "--force")
    assert code == 0 and dest.read_text() != "edited: true\n"


def test_cp_recipe_and_make_parents(capsys, tmp_path):
    dest = tmp_path / "a" / "b" / "my_recipe"
    code, _, err = run_tune(capsys, "cp", "full_finetune_single_device", str(dest))
    assert code == 2 and "does not exist" in err and "--make-parents" in err
    code, _, _ = run_tune(capsys, "cp", "full_finetune_single_device", str(dest), "--make-parents")
    assert code == 0 and (dest.with_suffix(".py")).read_text().startswith('"""Full fine-tuning')


def test_cp_unknown_name_suggests(capsys, tmp_path):
    code, _, err = run_tune(capsys, "cp", "full_finetune_single_devic", str(tmp_path / "x"))
    assert code == 2
    assert "no built-in recipe or config named 'full_finetune_single_devic'" in err
    assert "did you mean 'full_finetune_single_device'" in err


def test_cat_prints_config(capsys):
    name = all_configs()[0]
    code, out, _ = run_tune(capsys, "cat", name)
    assert code == 0 and "_component_" in out


def test_cat_unknown_config(capsys):
    code, _, err = run_tune(capsys, "cat", "no/such_config")
    assert code == 2 and "unknown config 'no/such_config'" in err and "tune ls" in err


def test_cat_missing_file(capsys, tmp_path):
    code, _, err = run_tune(capsys, "cat", str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in err


def test_run_unknown_recipe(capsys):
    code, _, err = run_tune(capsys, "run", "full_finetune_singel_device", "--config", "x")
    assert code == 2
    assert "unknown recipe 'full_finetune_singel_device'" in err
    assert "did you mean 'full_finetune_single_device'" in err
    assert "Traceback" not in err


def test_run_without_config(capsys):
    code, _, err = run_tune(capsys, "run", "full_finetune_single_device")
    assert code == 2 and "no config given" in err


def test_run_unknown_config(capsys):
    code, _, err = run_tune(capsys, "run", "full_finetune_single_device", "--config", "llama3_2/1B_ful_single_device")
    assert code == 2 and "unknown config" in err


def test_run_bad_override_syntax(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("a: 1\n")
    recipe = tmp_path / "r.py"
    recipe.write_text(
        "import sys\nfrom tuner import config\n@config.parse\ndef main(cfg):\n    print('A', cfg.a)\nif __name__ == "
        "'__main__':\n    sys.exit(main())\n"
    )
    code, out, err = run_tune(capsys, "run", str(recipe), "--config", str(cfg), "a")
    assert code == 2 and "bad override 'a'" in err and "key=value" in err
    code, out, err = run_tune(capsys, "run", str(recipe), "--config", str(cfg), "a=5")
    assert code == 0 and "A 5" in out


def test_single_device_recipe_refuses_several_processes(capsys):
    name = next(c for c in all_configs() if c.endswith("_full_single_device"))
    code, _, err = run_tune(capsys, "run", "--nproc_per_node", "2", "full_finetune_single_device", "--config", name)
    assert code == 2
    assert "runs on a single device only" in err and "full_finetune_distributed" in err


def test_torchrun_workers_get_the_launchers_tuner_on_pythonpath(tmp_path):
    """torchrun's workers run the recipe file as a script: the launcher appends the folder that holds
    its own `tuner` to their PYTHONPATH (an uninstalled checkout failed in every worker with "No
    module named 'tuner'"), after what the user had there."""
    import os

    import tuner

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\nfrom pathlib import Path\n"
        "Path(sys.argv[sys.argv.index('--config') + 1]).with_suffix('.out').write_text(os.environ['PYTHONPATH'])\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("x: 1\n")
    env = {**os.environ, "PYTHONPATH": "/users/own/path"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.cli.main",
            "run",
            "--nproc_per_node",
            "1",
            "--standalone",
            str(probe),
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = str(Path(tuner.__file__).resolve().parent.parent)
    assert cfg.with_suffix(".out").read_text().split(os.pathsep) == ["/users/own/path", root]


def test_debug_shows_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("a: [1, 2\n")
    base = [sys.executable, "-m", "tuner.cli.main"]
    plain = subprocess.run([*base, "validate", str(cfg)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and plain.stderr.startswith("error: invalid YAML")
    debug = subprocess.run([*base, "--debug", "validate", str(cfg)], capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_download_offline_fails_clearly(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_tune(capsys, "download", "meta-llama/Llama-3.2-1B", "--output-dir", str(tmp_path / "m"))
    assert code == 1
    assert "the Hugging Face Hub cannot be reached" in err and "Traceback" not in err


def test_registry_recipe_files_exist_for_listed_recipes():
    from tuner.registry import available_recipes

    names = {r.name for r in available_recipes()}
    assert {"full_finetune_single_device", "lora_finetune_single_device"} <= names
    assert all(r.name in {x.name for x in RECIPES} for r in available_recipes())


_WAIT_POLICY = """
import os, sys
from tuner.cli.main import main
assert main(["--version"]) == 0
print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
"""


def test_tune_makes_openmp_threads_wait_passively_before_torch_loads_unless_the_user_chose():
    """`tune` sets OMP_WAIT_POLICY=PASSIVE (idle threads do not spin on a core another process needs)
    before torch, and so OpenMP, is loaded, since OpenMP reads it only then; a user's own value stays."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for user, expected in ((None, "PASSIVE False"), ("ACTIVE", "ACTIVE False")):
        run_env = env if user is None else {**env, "OMP_WAIT_POLICY": user}
        proc = subprocess.run([sys.executable, "-c", _WAIT_POLICY], capture_output=True, text=True, env=run_env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split("\n")[-2] == expected, proc.stdout
