"""benchmarks/wheel_set.py: the check that carried wheels install on the GPU machine with --no-deps."""

from __future__ import annotations

import zipfile
from pathlib import Path

from benchmarks import wheel_set as ws

ROOT = Path(__file__).resolve().parents[2]


def make_wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """A minimal wheel: only its METADATA, which is all the check reads."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\n" + f"Name: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
        zf.writestr(f"{name.replace('-', '_')}/__init__.py", "")
    return path


def test_read_wheel_gives_canonical_name_version_and_requirements(tmp_path):
    w = ws.read_wheel(make_wheel(tmp_path, "Unsloth_Zoo", "2026.10.9", ["torch<2.15,>=2.4", "tyro"]))
    assert (w.name, w.version) == ("unsloth-zoo", "2026.10.9")
    assert [str(r) for r in w.requires] == ["torch<2.15,>=2.4", "tyro"]


def test_a_requirement_met_by_the_carried_set_or_the_image_is_no_problem(tmp_path):
    wheels = [
        ws.read_wheel(make_wheel(tmp_path, "unsloth", "1.0", ["unsloth_zoo>=1.0", "transformers<=5.17.0", "peft"])),
        ws.read_wheel(make_wheel(tmp_path, "unsloth-zoo", "1.0")),
    ]
    report = ws.check(wheels, {"transformers": "5.17.0", "peft": None})
    assert report.problems == []
    assert len(report.assumed) == 1 and "peft" in report.assumed[0]  # present, version unknown


def test_missing_names_wrong_versions_and_two_versions_are_problems(tmp_path):
    wheels = [
        ws.read_wheel(make_wheel(tmp_path / "a", "unsloth", "1.0", ["tyro", "transformers<=5.17.0", "trl<=1.15"])),
        ws.read_wheel(make_wheel(tmp_path / "a", "trl", "1.16")),
        ws.read_wheel(make_wheel(tmp_path / "b", "trl", "1.15")),
    ]
    report = ws.check(wheels, {"transformers": "5.18.0"})
    text = "\n".join(report.problems)
    assert "tyro; neither carried nor in the image" in text
    assert "the image has 5.18.0" in text
    assert "trl: two versions carried" in text
    assert "carried is 1.16" in text  # the first one read is the one checked against
    assert len(report.problems) == 4


def test_markers_are_evaluated_for_the_gpu_machine_and_extras_left_out(tmp_path):
    requires = [
        'mlx==0.32.4; sys_platform == "darwin"',
        'triton-windows; sys_platform == "win32"',
        'pytest; extra == "dev"',
        'xformers>=0.0.27; platform_machine == "x86_64"',
    ]
    report = ws.check([ws.read_wheel(make_wheel(tmp_path, "unsloth", "1.0", requires))], {})
    assert len(report.problems) == 1 and "xformers" in report.problems[0]


def test_not_carried_names_are_reported_with_their_reason(tmp_path):
    listing = tmp_path / "wheels.txt"
    listing.write_text("# not carried: xformers optional at import\na unsloth==1.0\n")
    wheel = ws.read_wheel(make_wheel(tmp_path, "unsloth", "1.0", ["xformers"]))
    report = ws.check([wheel], {}, ws.read_not_carried(listing))
    assert report.problems == []
    assert report.not_carried == ["unsloth 1.0 needs xformers; not carried: optional at import"]


def test_main_exits_1_on_a_problem_and_on_a_group_over_the_size_limit(tmp_path, capsys):
    make_wheel(tmp_path / "a", "unsloth", "1.0", ["tyro"])
    image = tmp_path / "image.txt"
    image.write_text("# comment\ntyro==1.0\ntorch==2.11.0\n")
    assert ws.main([str(tmp_path / "a"), "--image", str(image)]) == 0
    assert ws.main([str(tmp_path / "a"), "--image", str(image), "--max-group-mib", "0.0001"]) == 1
    assert "not under 0.0001 MiB" in capsys.readouterr().out
    image.write_text("torch==2.11.0\n")
    assert ws.main([str(tmp_path / "a"), "--image", str(image)]) == 1


def test_main_names_a_missing_folder(tmp_path, capsys):
    assert ws.main([str(tmp_path / "nowhere"), "--installed"]) == 2
    assert capsys.readouterr().out.startswith("error: no wheel folder")


def test_the_shipped_lists_parse():
    """The image list pins what KINDS.md showed (torch 2.11, transformers 5.17) and the wheel list
    names each wheel once, in group a or b."""
    image = ws.read_package_list(ROOT / "benchmarks" / "gpu_image_packages.txt")
    assert image["torch"] == "2.11.0" and image["transformers"] == "5.17.0" and "peft" in image
    rows = [ln.split() for ln in (ROOT / "benchmarks" / "unsloth_wheels.txt").read_text().splitlines()]
    pins = [r for r in rows if r and not r[0].startswith("#")]
    assert {g for g, _ in pins} == {"a", "b"}
    names = [p.split("==")[0] for _, p in pins]
    assert len(names) == len(set(names)) and {"unsloth", "unsloth-zoo", "bitsandbytes"} <= set(names)
    # carried only what the image lacks (certifi: the image's version is not known, unsloth needs >= 2026.10.19)
    assert all(n not in image for n in names if n != "certifi")
