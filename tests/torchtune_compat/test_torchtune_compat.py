"""torchtune 0.6.1's own unit tests, run against tuner with only the rename torchtune -> tuner.

``vendor/`` holds the vendored tests (vendor.py; README.md says how to refresh them). They run here
in a pytest session of their own, because their ``tests`` package is torchtune's. A vendored test
that fails does not fail this file: what must hold is that the copy is upstream's, that the
denominator is what EXCLUDED.md says, and that at least ``MIN_PASSING`` of its tests pass (the
count reached when this was last raised; raise it when more pass, never lower it to get green).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SUITE = HERE / "vendor"
MIRROR = Path("/work/.mirror/pytorch+torchtune/repo")  # a torchtune clone, where one exists

MIN_PASSING = 192  # of 210 (91.4%) on 2026-12-02; the issue asks for at least 80%


def _vendor():
    spec = importlib.util.spec_from_file_location("torchtune_compat_vendor", HERE / "vendor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upstream_ids() -> list[str]:
    lines = (HERE / "upstream_tests.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def excluded() -> dict[str, str]:
    """Node-id prefix -> "category: reason", from EXCLUDED.md."""
    out, category = {}, ""
    for line in (HERE / "EXCLUDED.md").read_text().splitlines():
        if line.startswith("## "):
            category = line[3:].strip()
        m = re.match(r"- `([^`]+)` — (.+)", line)
        if m:
            out[m.group(1)] = f"{category}: {m.group(2)}"
    return out


def matches(node_id: str, prefix: str) -> bool:
    return node_id == prefix or any(node_id.startswith(prefix + sep) for sep in ("::", "[", "/"))


def denominator() -> list[str]:
    prefixes = list(excluded())
    return [i for i in upstream_ids() if not any(matches(i, p) for p in prefixes)]


def test_vendored_copy_is_upstream_with_the_rename_only():
    source = MIRROR if (MIRROR / "HEAD").exists() else None  # also check the manifest against the tag
    assert _vendor().check(source) == []


def test_exclusions_match_upstream_tests_and_vendored_files():
    ids = upstream_ids()
    stale = [p for p in excluded() if not any(matches(i, p) for i in ids)]
    assert not stale, f"EXCLUDED.md entries that match no upstream test: {stale}"
    vendored = set(_vendor().TEST_FILES)
    files = {i.split("::")[0] for i in denominator()}
    assert files == vendored, (
        f"not vendored but in the denominator: {sorted(files - vendored)}; "
        f"vendored without a test in the denominator: {sorted(vendored - files)}"
    )


def _sessions(files: list[str]) -> list[list[str]]:
    """The vendored files split into pytest sessions: a file that imports torch.testing._internal
    runs alone, because that import freezes torch.backends' flags for the whole process under torch
    2.13 (the workaround torchtune's test_seed.py applies no longer undoes it)."""
    isolated = [f for f in files if "torch.testing._internal" in (SUITE / f).read_text()]
    return [[f for f in files if f not in isolated]] + [[f] for f in isolated]


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory) -> dict:
    """Run the vendored tests (the excluded ones deselected by exact id) and merge the records.

    They run from an empty folder holding a ``tests`` link to the vendored package, so files they
    write to the working directory (the profiler's output) land there, and relative paths such as
    ``tests/assets/...`` resolve as in torchtune's checkout.
    """
    work = tmp_path_factory.mktemp("compat")
    (work / "tests").symlink_to(SUITE / "tests", target_is_directory=True)
    prefixes = list(excluded())
    deselect = [a for i in upstream_ids() if any(matches(i, p) for p in prefixes) for a in ("--deselect", i)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    # mlflow 3 refuses its file store unless asked; torchtune's MLflow tests use one (a temp dir).
    env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    merged: dict = {"outcomes": {}, "messages": {}, "collection_errors": {}}
    for n, files in enumerate(_sessions(_vendor().TEST_FILES)):
        record = work / f"record{n}.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--continue-on-collection-errors",
            "-p",
            "compat_recorder",
            f"--compat-record={record}",
            "-c",
            str(SUITE / "pytest.ini"),
            "--rootdir",
            str(SUITE),
            *[str(SUITE / f) for f in files],
            *deselect,
        ]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert record.exists(), f"the vendored suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        for key, value in json.loads(record.read_text()).items():
            merged[key].update(value)
    return merged


def test_torchtune_tests_pass_against_tuner(suite_results):
    outcomes, messages = suite_results["outcomes"], suite_results["messages"]
    errors = suite_results["collection_errors"]
    ids = denominator()
    passed = [i for i in ids if outcomes.get(i) == "passed"]
    failed = []
    for i in ids:
        if outcomes.get(i) == "passed":
            continue
        why = messages.get(i) or errors.get(i.split("::")[0]) or outcomes.get(i, "not collected")
        failed.append(f"{i}: {why}")
    report = f"{len(passed)}/{len(ids)} passed ({100 * len(passed) / len(ids):.1f}%)"
    print(report, *failed, sep="\n  ")
    assert len(passed) >= MIN_PASSING, f"{report}, fewer than {MIN_PASSING}; not passing:\n  " + "\n  ".join(failed)
