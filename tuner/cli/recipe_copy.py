"""What `tune cp <recipe> my_recipe.py` writes: the recipe with its method written out.

A built-in recipe imports its `FinetuneMethod` (``from tuner.training.lora import LoRAFinetune``).
The copy replaces that import with the class itself: every hook the loop calls (which parameters
train, the optimizer's param groups, what a checkpoint holds, one micro-batch's loss, ...), each
with the source of the implementation the recipe runs (the class's own, else the inherited one),
and the imports those sources need. The loop stays in `tuner.training.trainer`, imported as before;
the copy runs exactly as the built-in recipe until you edit it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import textwrap
import types
from pathlib import Path

from tuner.training.trainer import FinetuneMethod

# `from tuner.training.<module> import <Name>` where <Name> is the recipe's FinetuneMethod.
_METHOD_IMPORT = re.compile(r"^from (tuner\.training\.\w+) import (\w+)\n", re.M)
_HEADER = (
    "# The fine-tuning method, copied by `tune cp` from {where}: change it here.\n"
    "# Its hooks say which parameters train, the optimizer's param groups, what a checkpoint holds and\n"
    "# one micro-batch's loss; the loop that calls them stays in tuner.training.trainer.Trainer.\n"
)


def _hooks(cls: type) -> list[str]:
    """The methods to write out: FinetuneMethod's hooks, then the class's own other methods, in
    the order their classes define them."""
    names = [n for n, v in vars(FinetuneMethod).items() if isinstance(v, types.FunctionType)]
    for klass in reversed(cls.__mro__):
        if issubclass(klass, FinetuneMethod) and klass is not FinetuneMethod:
            names += [n for n, v in vars(klass).items() if isinstance(v, types.FunctionType) and n not in names]
    return names


def _names_used(fn: types.FunctionType) -> set[str]:
    """Module-level names ``fn`` reads: in its code, and in its (postponed) annotations."""
    names: set[str] = set()
    todo = [fn.__code__]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    for annotation in fn.__annotations__.values():
        names.update(re.findall(r"(?<![\w.])([A-Za-z_]\w*)", str(annotation)))
    return {n for n in names if n in fn.__globals__}


def _import(name: str, fn: types.FunctionType) -> tuple[str, str]:
    """``(module, name)`` for ``from module import name`` (module "" for ``import name``), taken from
    where the object lives, or its package when the package exports it (``omegaconf.OmegaConf``)."""
    value = fn.__globals__[name]
    if isinstance(value, types.ModuleType):
        parent, _, leaf = value.__name__.rpartition(".")
        return (parent, leaf) if leaf == name and parent else ("", value.__name__)
    home = getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else None
    if home and not home.startswith("builtins"):
        package = home.split(".")[0]
        if getattr(importlib.import_module(package), name, None) is value:
            return package, name
        if getattr(importlib.import_module(home), name, None) is value:
            return home, name
    return fn.__module__, name


def _import_lines(imports: set[tuple[str, str]]) -> str:
    plain = sorted(f"import {name}" for module, name in imports if not module)
    by_module: dict[str, list[str]] = {}
    for module, name in imports:
        if module:
            by_module.setdefault(module, []).append(name)
    froms = [f"from {m} import {', '.join(sorted(names))}" for m, names in sorted(by_module.items())]
    return "\n".join(plain + froms)


def method_source(cls: type) -> str:
    """The class ``cls`` (a FinetuneMethod) as standalone source: imports, then the class."""
    imports = {("tuner.training.trainer", "FinetuneMethod")}
    body = []
    doc = vars(cls).get("__doc__") or inspect.getmodule(cls).__doc__
    if doc:
        body.append(textwrap.indent('"""' + inspect.cleandoc(doc) + '"""', "    "))
    attrs = {
        n: v
        for klass in reversed(cls.__mro__)
        for n, v in vars(klass).items()
        if not n.startswith("_") and isinstance(v, (str, int, float, bool))
    }
    body += [f"    {n} = {json.dumps(v)}" for n, v in attrs.items()]
    classes = {
        n: v
        for klass in reversed(cls.__mro__)
        for n, v in vars(klass).items()
        if not n.startswith("_") and isinstance(v, type)
    }  # e.g. settings = LoRASettings (the method's keys)
    for n, v in classes.items():
        body.append(f"    {n} = {v.__name__}")
        imports.add((v.__module__, v.__name__))
    for name in _hooks(cls):
        fn = getattr(cls, name)
        body.append(textwrap.indent(textwrap.dedent(inspect.getsource(fn)), "    ").rstrip())
        imports.update(_import(g, fn) for g in _names_used(fn) if g != cls.__name__)
    return _import_lines(imports) + f"\n\n\nclass {cls.__name__}(FinetuneMethod):\n" + "\n\n".join(body) + "\n"


def copied_recipe(recipe_path: Path) -> str:
    """The text `tune cp` writes for the recipe at ``recipe_path`` (see the module docstring)."""
    text = recipe_path.read_text()
    for match in _METHOD_IMPORT.finditer(text):
        module, name = match.groups()
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and issubclass(cls, FinetuneMethod):
            break
    else:  # generate, eval, merge: no method to write out
        return text
    block = _HEADER.format(where=f"{module}.{name}") + method_source(cls) + "\n"
    text = text[: match.start()] + text[match.end() :]
    # Everything written out uses postponed annotations, as tuner's own modules do.
    doc_end = re.match(r'\s*(""".*?"""|\'\'\'.*?\'\'\')\n', text, re.S)
    at = doc_end.end() if doc_end else 0
    if "from __future__ import annotations" not in text:
        text = text[:at] + "from __future__ import annotations\n\n" + text[at:]
    anchor = text.find("\n\nMETHOD = ")  # the recipe's instance of its method, which needs the class
    anchor = anchor if anchor >= 0 else text.find("\n\n@config.parse")
    if anchor < 0:
        return text.rstrip("\n") + "\n\n\n" + block
    return text[:anchor].rstrip("\n") + "\n\n\n" + block.rstrip("\n") + "\n\n\n" + text[anchor:].lstrip("\n")
