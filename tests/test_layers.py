"""The package's layers import one way: io < datasets < models < eval < trainer < bench < recipes (launch/ above all).

Walks every module's imports (ast, nothing is imported): a module imports only from its own layer or a lower one,
no import of a cslr module hides inside a function (the sign of code dodging a cycle), the module graph has no
cycle, and the size limits of the layering issue hold (cslr/ files <= 600 lines, launch/ doors <= 100).

Run: `pytest tests/test_layers.py -q`
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "cslr"
LAYERS = ["io", "datasets", "models", "eval", "trainer", "bench", "recipes"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    """cslr.<top>... -> the index of <top> in LAYERS; the package root (cslr/__init__) is below everything."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported cslr module, inside a function?, line) for every import of a cslr module in `path`."""
    module = module_name(path)
    tree = ast.parse(path.read_text("utf-8"))
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function, child.lineno) for a in child.names if a.name.startswith("cslr"))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child, module, path.name == "__init__.py")
                if target.startswith("cslr"):
                    # `from cslr.x import y` may import the submodule cslr.x.y
                    for a in child.names:
                        sub = f"{target}.{a.name}"
                        is_mod = (REPO / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                            (REPO / Path(*sub.split("."))).is_dir()
                        found.append((sub if is_mod else target, in_function, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


FILES = sorted(PKG.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for f in FILES:
        name = module_name(f)
        if name != "cslr":
            assert name.split(".")[1] in LAYERS, f"{f}: not in a known layer {LAYERS}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_run_one_way(path):
    mod = module_name(path)
    for target, in_function, line in imports(path):
        assert layer(target) <= layer(mod), f"{path}:{line}: {mod} ({LAYERS[layer(mod)]}) imports upward {target}"
        assert not in_function, f"{path}:{line}: import of {target} inside a function (a cycle dodged?)"


def test_no_import_cycle():
    graph = {module_name(f): {t for t, _, _ in imports(f)} for f in FILES}
    # a submodule import also loads its package's __init__: fold packages in
    state: dict[str, int] = {}

    def dfs(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                dfs(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node, [node])


def test_the_checker_sees_upward_and_hidden_imports(tmp_path, monkeypatch):
    """The walker itself: an upward import and a function-local one in a planted module are both found."""
    bad = PKG / "datasets" / "_planted_for_test.py"
    bad.write_text("from cslr.trainer import trainer\n\ndef f():\n    from cslr.models import registry\n")
    try:
        found = imports(bad)
    finally:
        bad.unlink()
    assert ("cslr.trainer.trainer", False, 1) in found and ("cslr.models.registry", True, 4) in found


def test_file_sizes():
    big = [(str(f.relative_to(REPO)), n) for f in FILES if (n := len(f.read_text("utf-8").splitlines())) > 600]
    assert not big, f"cslr/ files over 600 lines: {big}"
    doors = [(str(f.relative_to(REPO)), n) for f in sorted((REPO / "launch").glob("*.py"))
             if (n := len(f.read_text("utf-8").splitlines())) > 100]
    assert not doors, f"launch/ doors over 100 lines: {doors}"
