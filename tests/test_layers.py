"""The package's layers (docs/architecture.md): every import points down, and there is no circle.

A small AST walk over swanref/: each module belongs to a layer; an import of swanref code from a
higher layer fails, wherever it sits (top level or inside a function), and so does an import of
another layer's private (underscore) name.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

import swanref

PKG = pathlib.Path(swanref.__file__).resolve().parent

#: bottom to top; a module may import its own layer and the layers before it
LAYERS = ("spec", "backends", "presets", "ops", "update", "jax", "root", "verify", "testing", "tools",
          "entry")
#: the package root (swanref/__init__.py) re-exports the public operators: a layer of its own,
#: above the operators and below the verification toolkit that may use the public API
ENTRY = {"__main__", "cli", "pytest_plugin", "_pytest_entry"}


def layer_of(module: str) -> str:
    """'swanref.verify.checker' -> 'verify'; the compiled core counts as a backend."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    if head in ("__init__", "__version__"):
        return "root"
    if head in ("_core", "_jax_ffi"):  # the compiled modules
        return "backends"
    if head in ENTRY:
        return "entry"
    return head


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = ["swanref", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1] if len(parts) > 1 else parts
        yield ".".join(parts) if parts != ["swanref"] else "swanref.__init__", path


def imports(module: str, path: pathlib.Path, nodes=None):
    """(imported swanref module, imported names, line) for every import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if module == "swanref.__init__":
        package = "swanref"
    if nodes is None:
        nodes = ast.walk(ast.parse(path.read_text(), str(path)))
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("swanref"):
                    yield a.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("swanref"):
                names = tuple(a.name for a in node.names)
                if target == "swanref":  # `from swanref import presets`: submodules by name
                    for n in names:
                        yield f"swanref.{n}", (), node.lineno
                    continue
                # `from pkg import sub` imports the submodule pkg.sub (not pkg's namespace)
                subs = [n for n in names if f"{target}.{n}" in MODULE_NAMES]
                for n in subs:
                    yield f"{target}.{n}", (), node.lineno
                rest = tuple(n for n in names if n not in subs)
                if rest:
                    yield target, rest, node.lineno


ALL = list(modules())
MODULE_NAMES = {m for m, _ in ALL} | {m.rpartition(".__init__")[0] for m, _ in ALL}


def test_every_module_has_a_layer():
    unknown = [m for m, _ in ALL if layer_of(m) not in LAYERS]
    assert not unknown, f"modules outside the layers of docs/architecture.md: {unknown}"


@pytest.mark.parametrize("module, path", ALL, ids=[m for m, _ in ALL])
def test_imports_point_down(module, path):
    mine = LAYERS.index(layer_of(module))
    bad = []
    for target, names, line in imports(module, path):
        theirs = layer_of(target)
        if theirs not in LAYERS:
            continue  # e.g. `from swanref import __version__` style names of the package root
        if LAYERS.index(theirs) > mine:
            bad.append(f"line {line}: {target} ({theirs}) from {layer_of(module)}")
        if theirs != layer_of(module):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"line {line}: private {private} of {target} across layers")
    assert not bad, f"{module}:\n  " + "\n  ".join(bad)


def _load_time_imports(tree):
    """Import statements that run when the module loads: the module body, including the
    bodies of top-level ``try``/``if``/``with`` blocks, not function or class bodies."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(child for child in ast.iter_child_nodes(node)
                        if isinstance(child, ast.stmt) or isinstance(child, ast.excepthandler))


def test_no_import_cycle_between_modules():
    """Load-time imports only (a function-level import cannot form a load-time circle, and the
    direction test above already forbids upward ones)."""
    graph = {}
    for module, path in ALL:
        tree = ast.parse(path.read_text())
        deps = set()
        for node in _load_time_imports(tree):
            for target, _, _ in imports(module, path, [node]):
                if target != module and target in dict(ALL):
                    deps.add(target)
        graph[module] = deps
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)


def test_the_check_can_fail(tmp_path):
    """The walker sees an upward import inside a function (guards the guard)."""
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from swanref.tools import study\n")
    found = list(imports("swanref.spec.probe", f))
    assert found == [("swanref.tools.study", (), 2)]
    assert LAYERS.index(layer_of("swanref.tools.study")) > LAYERS.index(layer_of("swanref.spec.x"))


#: the function-local imports of swanref modules, each with why it is not at the top
#: (docs/architecture.md, "Imports"); everything else is imported at module level
LOCAL_IMPORTS = {
    ("swanref.ops", "swanref.presets.catalogue"): "`import swanref` loads no preset catalogue",
    ("swanref.update", "swanref.presets.catalogue"): "`import swanref` loads no preset catalogue",
    ("swanref.backends.registry", "swanref.backends.cpp"): "the compiled core, when selected",
    ("swanref.backends.cupy._cublas_ct", "swanref.backends.cupy.blas"): "blas imports it",
    ("swanref.verify.checker", "swanref.verify.update_properties"): "it imports the checker",
    ("swanref.verify.checker", "swanref.verify.properties"): "hypothesis: the checker imports "
    "without it and says what is missing",
    ("swanref.pytest_plugin", "swanref.verify.checker"): "pytest start-up: load when used",
    ("swanref.pytest_plugin", "swanref.verify.properties"): "pytest start-up: load when used",
    ("swanref.pytest_plugin", "swanref.verify.claims"): "pytest start-up: load when used",
}


def local_imports(module, path):
    """(imported swanref module, line) for every import inside a function body."""
    tree = ast.parse(path.read_text(), str(path))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = [n for stmt in fn.body for n in ast.walk(stmt)
                     if isinstance(n, (ast.Import, ast.ImportFrom))]
            for target, _, line in imports(module, path, inner):
                yield target, line


def test_function_local_imports_of_swanref_are_the_listed_ones():
    """A swanref import inside a function is a listed exception (a circle, start-up time, the
    compiled core), not a way around the layers or a forgotten top-level import."""
    found = {}
    for module, path in ALL:
        for target, line in local_imports(module, path):
            if target.startswith("swanref.") and target.count(".") >= 1:
                key = (module, target)
                if key not in LOCAL_IMPORTS:
                    found.setdefault(key, line)
    assert not found, "function-local imports to move to the top (or list with a reason): " + \
        ", ".join(f"{m} line {line}: {t}" for (m, t), line in sorted(found.items()))


def test_local_import_list_is_current():
    seen = {(m, t) for m, p in ALL for t, _ in local_imports(m, p)}
    assert set(LOCAL_IMPORTS) <= seen, set(LOCAL_IMPORTS) - seen
