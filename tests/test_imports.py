"""The data package stands alone and its modules form no import cycle (issue 10)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import kinetics_prep

ROOT = Path(kinetics_prep.__file__).parent


def _modules() -> list[str]:
    found = ["kinetics_prep"]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="kinetics_prep."):
        found.append(info.name)
    return sorted(found)


def _path_of(module: str) -> Path:
    parts = module.split(".")[1:]
    package = ROOT.joinpath(*parts, "__init__.py")
    return package if package.is_file() else ROOT.joinpath(*parts).with_suffix(".py")


def _imports(module: str, known: set[str]) -> set[str]:
    """Every kinetics_prep module ``module`` imports, at any depth of its code.

    Function-level and TYPE_CHECKING imports count too: a cycle hidden in a
    function body is still a cycle in the design.
    """
    tree = ast.parse(_path_of(module).read_text(encoding="utf-8"))
    is_package = _path_of(module).name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        out.update(name for name in names if name in known and name != module)
    return out


def test_no_module_of_kinetics_prep_is_part_of_an_import_cycle():
    modules = _modules()
    known = set(modules)
    graph = {m: _imports(m, known) for m in modules}
    # a package's __init__ may re-export its own submodules; a submodule never imports it back
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in modules:
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_alone_without_the_trainer_or_torch():
    """Each module imported first in a fresh interpreter: no order-dependent imports."""
    script = (
        "import importlib, json, sys\n"
        "bad = {}\n"
        f"for name in {_modules()!r}:\n"
        "    for key in [k for k in sys.modules if k.startswith('kinetics_prep')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        bad[name] = repr(error)\n"
        "heavy = sorted(m for m in ('trainer', 'torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "print(json.dumps({'bad': bad, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bad"] == {}
    assert result["heavy"] == []


def test_the_contract_constants_are_defined_once():
    """File names and the default prompt live in kinetics_prep/schema.py only."""
    literals = [
        '"label_map.json"',
        '"training_summary.json"',
        '"extract_results.jsonl"',
        '"download_results.jsonl"',
        '"kprep_build.json"',
        '"Please analyze the sequence',
    ]
    repo = ROOT.parent
    offenders = []
    for path in sorted([*ROOT.rglob("*.py"), *(repo / "trainer").rglob("*.py")]):
        if path.name == "schema.py" and path.parent == ROOT:
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(repo)}: {lit}" for lit in literals if lit in text]
    assert offenders == []
