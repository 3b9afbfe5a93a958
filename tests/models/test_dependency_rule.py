"""The package dependency rule for the packages below training: a package imports only packages
below it (errors < config < quantization < peft < data < models < checkpoint), at module level or
inside a function. ``tuner._lazy`` and ``tuner.hub`` are helpers any package may use."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TUNER = Path(__file__).resolve().parents[2] / "tuner"
ORDER = ["errors", "config", "quantization", "peft", "data", "models", "checkpoint"]
HELPERS = {"_lazy", "hub"}


def _imported_packages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        out |= {n.split(".")[1] for n in names if n.startswith("tuner.")}
    return out


@pytest.mark.parametrize("package", ["peft", "models", "checkpoint"])
def test_no_upward_imports(package):
    allowed = set(ORDER[: ORDER.index(package) + 1]) | HELPERS
    wrong = {f"{p.relative_to(TUNER)}: tuner.{pkg}" for p in (TUNER / package).rglob("*.py")
             for pkg in _imported_packages(p) - allowed}
    assert not wrong, sorted(wrong)
