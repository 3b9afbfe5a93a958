"""The package dependency rule (docs/internals.md, "Layers"), checked on the source:

- a package imports only packages at or below its layer, at module level or inside a function;
- no two modules import each other at module level, directly or through others (no import circle);
- imports inside functions are only of optional or heavy third-party packages, or in the CLI
  (whose commands import what they run, so `tune --help` starts fast).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TUNER = Path(__file__).resolve().parents[1] / "tuner"

#: Lowest first; a package may import its own layer and the ones before it.
LAYERS: list[set[str]] = [
    {"errors", "_lazy"},
    {"hub", "registry", "devices"},
    {"config"},
    {"quantization"},
    {"peft"},
    {"data"},
    {"datasets"},
    {"models"},
    {"checkpoint"},
    {"generation"},
    {"training"},
    {"evaluation"},
    {"modules", "rlhf", "cli"},
]
#: Third-party packages a function may import on first use: optional extras, and heavy imports that
#: only some commands need.
LAZY_OK = {
    "bitsandbytes",
    "datasets",
    "gguf",
    "huggingface_hub",
    "lm_eval",
    "sentencepiece",
    "tiktoken",
    "tokenizers",
    "comet_ml",
    "mlflow",
    "wandb",
    "triton",
    "torch.distributed.checkpoint",  # ~1 s (DTensor, sympy): only runs on several ranks read or write it
    "torch.distributed.fsdp",  # torchtune's set_activation_checkpointing with a set of classes
    "torch.distributed.tensor",  # DTensor (~0.7 s): torchtune's tensor-parallel plan, never applied
    "torch.distributed.run",
    "torch.distributed.elastic",
    "torch.utils.tensorboard",
    "torch._inductor",  # the compiler (never imported at start: _NOT_AT_START); only compiled runs set it up
}


def _package(path: Path) -> str:
    rel = path.relative_to(TUNER)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _module(path: Path) -> str:
    rel = path.relative_to(TUNER.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every absolute import of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for sub in ast.walk(node)
        if isinstance(sub, (ast.Import, ast.ImportFrom))
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in inner, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.module, id(node) in inner, node.lineno)]
            out += [
                (f"{node.module}.{a.name}", id(node) in inner, node.lineno)
                for a in node.names
                if (TUNER.parent / node.module.replace(".", "/") / a.name).with_suffix(".py").exists()
            ]
    return out


FILES = sorted(TUNER.rglob("*.py"))


def _layer(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_every_package_has_a_layer():
    packages = {_package(p) for p in FILES if _package(p) != "__init__"}
    assert not [p for p in packages if not any(p in layer for layer in LAYERS)], packages


def test_no_package_imports_a_higher_one():
    wrong = []
    for path in FILES:
        here = _package(path)
        if here == "__init__":
            continue
        for module, _, line in _imports(path):
            if module.startswith("tuner.") and _layer(module.split(".")[1]) > _layer(here):
                wrong.append(f"{path.relative_to(TUNER.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_imports_inside_functions_are_only_optional_or_heavy_packages():
    wrong = []
    for path in FILES:
        if _package(path) == "cli":
            continue
        for module, inner, line in _imports(path):
            if inner and not any(module == ok or module.startswith(ok + ".") for ok in LAZY_OK):
                wrong.append(f"{path.relative_to(TUNER.parent)}:{line} imports {module} inside a function")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_between_modules():
    modules = {_module(p): p for p in FILES}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for module, inner, _ in _imports(path):
            if not inner and module in modules and module != name:
                parent = name.rsplit(".", 1)[0]
                if module == parent and path.name != "__init__.py":
                    continue  # a submodule reading its own package's other names: Python allows it, no circle of files
                graph[name].add(module)
    # Tarjan's strongly connected components: a component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in list(modules):
        if v not in index:
            visit(v)
    assert not circles, circles


#: What a CPU process must not import to read a config and build a model on meta: each costs
#: seconds at every `tune` start and only compiled, Triton or multi-rank runs need it.
_NOT_AT_START = ("torch._dynamo", "torch._inductor", "torch.distributed.checkpoint", "torch.distributed.tensor")

_START = """
import sys, torch
import recipes.lora_finetune_single_device, recipes.generate, recipes.eval, recipes.merge
from tuner.checkpoint.fill import build_on_meta
model = build_on_meta({"_component_": "tuner.models.llama3_2.lora_llama3_2_1b",
                       "lora_attn_modules": ["q_proj", "v_proj"]}, torch.float32)
assert next(model.parameters()).is_meta
assert torch.nn.init.normal_.__module__ == "torch.nn.init"  # put back after the build
print(sorted(m for m in sys.modules if m.startswith(%r)))
"""


def test_start_up_imports_no_compiler_and_no_multi_rank_machinery():
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _START % (_NOT_AT_START,)],
        cwd=TUNER.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout
