"""The package's house rules, read from the source: no import cycle, no import of the package
hidden inside a function, and each folder imports only the folders below it (the order is in
``s3brain/__init__.py`` and CONTRIBUTING.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "s3brain"

#: folder -> the folders its modules may import (besides their own)
MAY_IMPORT = {
    "utils": set(),
    "data": {"utils"},
    "backbone": {"utils"},
    "lobes": {"backbone", "utils"},
    "strategies": {"backbone", "utils"},
    "deployment": {"strategies", "lobes", "backbone", "utils"},
    "training": {"deployment", "strategies", "lobes", "data", "backbone", "utils"},
    "inference": {"deployment", "strategies", "lobes", "backbone", "utils"},
    "compare": {"backbone", "utils"},
}


def _modules():
    """``{dotted name: path}`` of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _resolve(name):
    """The package module that ``name`` (a module or a name in one) lives in, or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module):
    """``[(lineno, imported module, inside a function)]`` of the package's own imports."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    local = {id(node) for fn in ast.walk(tree)
             if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "s3brain" else None
            if target and target != module and not module.startswith(target + "."):
                found.append((node.lineno, target, id(node) in local))
    return found


def _graph():
    return {m: {t for _, t, _ in _imports(m)} for m in MODULES}


def _cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_cycle_search_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_of_the_package_inside_a_function():
    local = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {target}"
             for m in MODULES for line, target, inside in _imports(m) if inside]
    assert not local, "\n".join(local)


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_a_folder_imports_only_the_folders_below_it(folder):
    wrong = []
    for module in (m for m in MODULES if m.split(".")[1:2] == [folder]):
        for line, target, _ in _imports(module):
            other = target.split(".")[1] if target.count(".") else None
            if other and other != folder and other not in MAY_IMPORT[folder]:
                wrong.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports "
                             f"{target}")
    assert not wrong, "\n".join(wrong)


def test_every_folder_is_placed():
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders == set(MAY_IMPORT)
