"""The house's rules, checked on the code: no import circles in tlcore, no streamlit in tlcore."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlcore"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """Every tlcore module ``path`` imports, at the top or inside a function (lazy imports count: they
    run too); imports under ``if TYPE_CHECKING`` do not (they never run)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:  # `from a import b`: the module a.b when there is one, else a
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != this}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, known) for f in files}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_and_not_type_checking_ones():
    graph = import_graph()
    assert "tlcore.models" in graph["tlcore.specs"]  # imported inside a function (ExperimentSpec.validate)
    # executors.base names experiments.RunResult under TYPE_CHECKING only, and imports the module in run_work
    source = (PACKAGE / "executors" / "base.py").read_text()
    assert "if TYPE_CHECKING:\n    from tlcore.experiments import RunResult" in source
    assert "    from tlcore import experiments\n" in source
    assert "tlcore.experiments" in graph["tlcore.executors.base"]


def test_type_checking_imports_draw_no_arrow(tmp_path):
    module = tmp_path / "tlcore" / "a.py"
    module.parent.mkdir()
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tlcore import b\n")
    known = {"tlcore", "tlcore.a", "tlcore.b"}
    assert imports_of(module, known, root=tmp_path) == set()
    module.write_text("def f():\n    from tlcore import b\n")
    assert imports_of(module, known, root=tmp_path) == {"tlcore.b"}


def test_no_import_circles_in_tlcore():
    found = circles(import_graph())
    assert not found, "import circles in tlcore (each line: modules that import each other):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_tlcore_never_imports_streamlit():
    offenders = [str(f.relative_to(ROOT)) for f in PACKAGE.rglob("*.py") if "import streamlit" in f.read_text()]
    assert not offenders


def test_the_layers_below_the_methods_never_import_them():
    """specs and tracking read the method registry they are handed (use_method_registry); an import of
    tlcore.methods from below would run back up the house (design.md's layers)."""
    below = ("tlcore.specs", "tlcore.tracking", "tlcore.registry", "tlcore.validation", "tlcore.errors",
             "tlcore.models", "tlcore.data", "tlcore.measure", "tlcore.features", "tlcore.classifiers")
    graph = import_graph()
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith(below)
                    for t in targets if t.startswith("tlcore.methods"))
    assert not upward, "imports that run back up to the methods:\n" + "\n".join(upward)
