"""The package's import graph, read from the source with ``ast`` (imports inside functions included).

(a) No cycle: a function-level import hides a cycle from the interpreter, not from the design.
(b) One owner per concept: a callbacks module that defines a Callback never imports another such module; what two
    callbacks share lives in a non-callback module (e.g. ``lit_transfer.optim.batch_rules``,
    ``lit_transfer.trainer_facts``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from lightning.pytorch import Callback

import lit_transfer

PACKAGE = Path(lit_transfer.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["lit_transfer", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an import of ``name`` executes last: ``name`` or its nearest enclosing package module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules ``module`` imports anywhere in its source (parents a dotted import runs are not counted)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_target(alias.name, modules) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                found.update(filter(None, [_target(f"{base}.{alias.name}", modules) or _target(base, modules)]))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(module, path, modules) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def callback_modules() -> set[str]:
    """Modules under ``lit_transfer/callbacks/`` that define a Lightning Callback class."""
    found = set()
    for module in _modules():
        if not module.startswith("lit_transfer.callbacks."):
            continue
        members = vars(importlib.import_module(module)).values()
        if any(
            inspect.isclass(m) and issubclass(m, Callback) and m.__module__ == module and m is not Callback
            for m in members
        ):
            found.add(module)
    return found


def test_the_parser_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = "import os\nfrom . import sibling\n\ndef f():\n    from lit_transfer.pkg.mod import thing\n"
    (tmp_path / "user.py").write_text(source)
    modules = {m: Path(m) for m in ("lit_transfer.pkg", "lit_transfer.pkg.mod", "lit_transfer.pkg.sibling")}
    found = _imports("lit_transfer.pkg.user", tmp_path / "user.py", modules)
    assert found == {"lit_transfer.pkg.mod", "lit_transfer.pkg.sibling"}


def test_cycle_finder_finds_the_old_callback_cycle() -> None:
    """The negative control: the graph of the first release (lr_scaling <-> batch_size_ramp) has a cycle."""
    graph = {
        "lit_transfer.callbacks.lr_scaling": {"lit_transfer.callbacks.batch_size_ramp"},
        "lit_transfer.callbacks.batch_size_ramp": {
            "lit_transfer.callbacks.lr_scaling",
            "lit_transfer.optim.param_groups",
        },
        "lit_transfer.optim.param_groups": set(),
    }
    assert find_cycle(graph) == [
        "lit_transfer.callbacks.batch_size_ramp",
        "lit_transfer.callbacks.lr_scaling",
        "lit_transfer.callbacks.batch_size_ramp",
    ]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "lit_transfer.callbacks.lr_scaling" in graph and len(graph) > 20
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_no_callback_module_imports_another() -> None:
    graph, callbacks = import_graph(), callback_modules()
    assert {"lit_transfer.callbacks.lr_scaling", "lit_transfer.callbacks.batch_size_ramp"} <= callbacks
    assert "lit_transfer.callbacks._ramp_schedule" not in callbacks
    offending = sorted((m, other) for m in callbacks for other in graph[m] & callbacks)
    assert not offending, (
        f"callback modules importing other callback modules: {offending}. Move what they share into a non-callback"
        " module (the Trainer facts are in lit_transfer.trainer_facts, the LR scaling rule in"
        " lit_transfer.optim.batch_rules) or find the other callback through a protocol."
    )


def test_the_package_tree_shows_the_architecture() -> None:
    """At most 8 modules at the top level besides __init__, __main__, errors and _compat; none over 500 lines."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__", "errors", "_compat"))
    assert len(top) <= 8, f"{len(top)} top-level modules: {top}; move some into the subpackage of their concept"
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"modules over 500 lines: {long}"


def test_no_public_name_is_defined_in_two_modules() -> None:
    """One name, one thing: a public function or class is defined once in the package (``main``, each runnable
    module's entry point, aside), so an import never picks the wrong namesake."""
    where: dict[str, list[str]] = {}
    for name, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(name)
    twice = {name: found for name, found in where.items() if len(found) > 1 and name != "main"}
    assert not twice, f"names defined in several modules: {twice}; rename all but the one that owns the concept"


def bool_excluding_int_checks(source: str) -> list[int]:
    """Lines of ``source`` where one boolean expression tests a value with ``isinstance(x, bool)`` and
    ``isinstance(x, int)`` (or a tuple holding ``int``): a copy of ``lit_transfer.errors.is_int``/``is_number``."""

    def classes(node: ast.expr) -> set[str]:
        elements = node.elts if isinstance(node, ast.Tuple) else [node]
        return {e.id for e in elements if isinstance(e, ast.Name)}

    lines = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.BoolOp):
            continue
        tested: dict[str, set[str]] = {}
        for call in ast.walk(node):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "isinstance"
                and len(call.args) == 2
            ):
                tested.setdefault(ast.dump(call.args[0]), set()).update(classes(call.args[1]))
        if any({"bool", "int"} <= found for found in tested.values()):
            lines.add(node.lineno)
    return sorted(lines)


def test_the_int_check_finder_sees_the_copies() -> None:
    """The negative control: the copies the package had before ``errors.check_int`` are found, other checks not."""
    copies = (
        "def f(x, v):\n"
        "    if not isinstance(x, int) or isinstance(x, bool) or x <= 0:\n"
        "        raise ValueError(x)\n"
        "    ok = all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)\n"
        "    return isinstance(v, bool) or not isinstance(\n"
        "        v, (int, str)\n"
        "    )\n"
    )
    assert bool_excluding_int_checks(copies) == [2, 4, 5]
    others = "ok = isinstance(x, bool) or isinstance(y, int)\nflag = isinstance(x, int) and x > 0\n"
    assert bool_excluding_int_checks(others) == []


def test_only_errors_defines_what_an_integer_is() -> None:
    """``True`` is an ``int`` to ``isinstance``; the checks that exclude it live in ``lit_transfer.errors`` only."""
    copies = {
        str(path.relative_to(PACKAGE.parent)): lines
        for module, path in _modules().items()
        if module != "lit_transfer.errors" and (lines := bool_excluding_int_checks(path.read_text()))
    }
    assert not copies, (
        f"bool-excluding int checks outside lit_transfer/errors.py (file: lines): {copies}. Use"
        " lit_transfer.errors.is_int / is_number, or check_int / check_positive_int for an argument check."
    )
