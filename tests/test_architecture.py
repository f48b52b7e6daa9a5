"""The shape of the package: three layers, no import cycles inside ``malle/``, names that say one thing, and no
module over ``MAX_LINES`` lines.

The layers: the core (``CORE``: images, data, ops, descriptors, inference, retrieval, tricks, evaluation) never
imports the lab (``malle.lab``), and neither imports the products (``PRODUCTS``: bank, service, dedup, scale,
report, dashboard, cli) that use them.

The import graph is read from the source with ``ast``, so it sees every import,
also those inside functions (a lazy import hides a cycle; it does not remove it).
Only imports that run count: not those under ``if TYPE_CHECKING:``, which only name
types for annotations. Nor does a package count for its submodules: importing
``malle.ops.chains`` runs ``malle/ops/__init__.py`` first, but that is how packages
load, not a dependency of ``chains`` on its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "malle"
MAX_LINES = 450

CORE = ("errors", "parallel", "io", "data", "ops", "descriptors", "inference", "retrieval", "tricks", "evaluation")
LAB = ("lab",)
PRODUCTS = ("scale", "bank", "dedup", "service", "report", "dashboard", "cli")
LAYERS = {"core": 0, "lab": 1, "products": 2}
# Leaf names that name a role rather than a job: each package has its own, and that is what they say.
ROLE_NAMES = {"__init__", "__main__", "base", "registry", "options"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` at ``path`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node, package)
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(nearest_known(target, known) for target in targets)
    found.discard(None)
    found.discard(name)
    return found


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those in the body of an ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for branch in node.orelse:
                yield branch
                yield from runtime_nodes(branch)
        else:
            yield from runtime_nodes(node)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def nearest_known(target: str, known: set[str]) -> str | None:
    """``malle.ops.chains.Step``-style targets belong to the longest known module that prefixes them."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(path, name, known) for name, path in found.items()}


def cyclic_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan's strongly connected
    components with more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for start in sorted(graph):
        if start not in index:
            visit(start)
    return sorted(groups)


def test_the_graph_reader_sees_relative_absolute_and_lazy_imports():
    graph = import_graph()
    assert "malle.ops.registry" in graph["malle.ops.reference"]  # from .registry import ...
    assert "malle.io.images" in graph["malle.ops.reference"]  # from malle.io.images import ...
    assert {"malle.ops.reference", "malle.ops.edits"} <= graph["malle.ops"]  # the package's own imports
    assert "malle.errors" in graph["malle.retrieval.metrics"]


def test_imports_only_for_type_checking_are_not_edges(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
                      "def f():\n    import c\n")
    assert imported(source, "mod", {"a", "b", "c"}) == {"b", "c"}


def test_the_cycle_finder_finds_every_loop_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert cyclic_groups(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cyclic_groups({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_malle():
    groups = cyclic_groups(import_graph())
    assert not groups, "modules that import each other: " + "; ".join(" <-> ".join(g) for g in groups)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_the_line_limit(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (limit {MAX_LINES}): split it"


def layer_of(module: str) -> str:
    """The layer of a module of ``malle``: core, lab or products (the package itself counts as a product)."""
    top = module.split(".")[1] if "." in module else ""
    if top in CORE:
        return "core"
    if top in LAB:
        return "lab"
    assert top in PRODUCTS or module in ("malle", "malle.__main__"), f"{module}: declare its top-level package's layer"
    return "products"


def test_every_top_level_part_of_malle_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem not in ("__init__", "__main__")}
    assert tops == set(CORE) | set(LAB) | set(PRODUCTS)


def test_no_layer_imports_a_layer_above_it():
    wrong = [f"{name} ({layer_of(name)}) imports {dep} ({layer_of(dep)})"
             for name, deps in import_graph().items() for dep in deps
             if LAYERS[layer_of(dep)] > LAYERS[layer_of(name)]]
    assert not wrong, "layering broken: " + "; ".join(sorted(wrong))


def test_the_layer_rule_sees_an_upward_import():
    assert LAYERS[layer_of("malle.lab.experiment")] > LAYERS[layer_of("malle.retrieval.topk")]
    assert LAYERS[layer_of("malle.bank.bank")] > LAYERS[layer_of("malle.lab.results")]


def test_no_two_modules_share_a_name_for_different_jobs():
    """A leaf name is one job: ``malle.cli.X`` is the command that drives X, a dashboard page's logic is named
    after its page, and a package's main module after its package (``malle.bank.bank``); every other module name
    is unique."""
    pages = {f"malle.dashboard.{p.stem}" for p in (ROOT / "app_pages").glob("*.py")}
    seen: dict[str, list[str]] = {}
    for name in modules():
        package, _, leaf = name.rpartition(".")
        if name.startswith("malle.cli.") or name in pages or not package or package.endswith("." + leaf):
            continue
        if leaf not in ROLE_NAMES:
            seen.setdefault(leaf, []).append(name)
    shared = {leaf: names for leaf, names in seen.items() if len(names) > 1}
    assert not shared, f"modules sharing a name: {shared}"


def test_page_logic_modules_are_named_after_their_pages():
    pages = {p.stem for p in (ROOT / "app_pages").glob("*.py")}
    logic = {p.stem for p in (PACKAGE / "dashboard").glob("*.py")}
    assert pages <= logic, f"pages without a logic module of the same name: {sorted(pages - logic)}"


def test_no_two_classes_share_a_name():
    found: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found.setdefault(node.name, []).append(name)
    shared = {cls: names for cls, names in found.items() if len(names) > 1}
    assert not shared, f"classes defined twice: {shared}"


def cache_call_names() -> list[tuple[str, str | None, bool]]:
    """Every ``X.cached(func, ..., name=...)`` call of the dashboard: (where, its name, whether func is a lambda)."""
    found = []
    for path in [*sorted((ROOT / "app_pages").glob("*.py")), *sorted((PACKAGE / "dashboard").glob("*.py")),
                 ROOT / "streamlit_app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cached":
                name = next((k.value.value for k in node.keywords if k.arg == "name"
                              and isinstance(k.value, ast.Constant)), None)
                lam = bool(node.args) and isinstance(node.args[0], ast.Lambda)
                found.append((f"{path.name}:{node.lineno}", name, lam))
    return found


def test_the_dashboards_cache_keys_are_unique():
    """``AppContext.cached`` keys a result by its function's module and qualified name, or by ``name=`` for a
    lambda: a lambda without one, or two call sites sharing a name, would hand one page another's result."""
    calls = cache_call_names()
    assert calls, "no ctx.cached call found: the scan is looking in the wrong place"
    unnamed = [where for where, name, lam in calls if lam and name is None]
    assert not unnamed, f"lambdas cached without name=: {unnamed}"
    names = [name for _, name, _ in calls if name is not None]
    assert len(names) == len(set(names)), f"cache names used twice: {sorted(n for n in names if names.count(n) > 1)}"
