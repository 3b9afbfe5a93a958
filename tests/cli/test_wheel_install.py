"""The wheel (non-editable) carries recipes and configs: `tune ls` and `tune cp` work from any folder."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_tune_works_from_any_directory(tmp_path):
    wheel_dir = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheel_dir.glob("tuner-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    venv_site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # The dependencies come from this interpreter's environment (its site folder and any it chains to by a
    # .pth line, as a venv layered on a shared one does); tuner itself only from the wheel.
    sites = [sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith("site-packages"))]
    (venv_site / "deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(sites)))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(venv_site), str(wheel)], check=True
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    tune = [str(py), "-c", "import sys; from tuner.cli.main import main; sys.exit(main())"]
    where = subprocess.check_output([str(py), "-c", "import tuner; print(tuner.__file__)"], text=True, cwd=work)
    assert str(venv_site) in where, where  # not the source checkout
    ls = subprocess.run([*tune, "ls"], capture_output=True, text=True, cwd=work)
    assert ls.returncode == 0, ls.stderr
    assert "lora_finetune_single_device" in ls.stdout and "llama3_2/1B_lora_single_device" in ls.stdout
    cp = subprocess.run(
        [*tune, "cp", "llama3_2/1B_lora_single_device", "mine"], capture_output=True, text=True, cwd=work
    )
    assert cp.returncode == 0, cp.stderr
    assert "lora_llama3_2_1b" in (work / "mine.yaml").read_text()
    cp_recipe = subprocess.run(
        [*tune, "cp", "lora_finetune_single_device", "r.py"], capture_output=True, text=True, cwd=work
    )
    assert cp_recipe.returncode == 0 and (work / "r.py").read_text().startswith('"""LoRA')
    entry = subprocess.check_output(
        [
            str(py),
            "-c",
            "from importlib.metadata import entry_points; print([e.value for e in "
            "entry_points(group='console_scripts') if e.name == 'tune'])",
        ],
        text=True,
        cwd=work,
    )
    assert "tuner.cli.main:main" in entry  # the `tune` console script
