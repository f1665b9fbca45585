"""vsr's import graph: no module imports one that imports it back (directly or round a longer circle),
and no private name (leading underscore) is used outside the module that defines it.

Every module under vsr/ is parsed (not imported); every import that runs counts, also those inside
functions: a lazy import hides a circle, it does not remove it. Imports under ``if TYPE_CHECKING:`` never
run and are no edge (annotations may name a module's caller), but they take no private names either. An
edge goes to the module named (``from .video import transcode`` to vsr.video.transcode when that is a
module, else to vsr.video).

    python tests/test_imports.py           prints the circles (nothing when there are none)
    python tests/test_imports.py --graph   prints every module and what it imports
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vsr"


def module_files() -> dict[str, Path]:
    """Every module of vsr by dotted name (a package by its own name, from its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``"""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class ModuleImports:
    """What one module imports (edges to other vsr modules) and the private names it takes from them."""

    def __init__(self, name: str, path: Path, modules: set[str]) -> None:
        self.name, self.modules = name, modules
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.edges: set[str] = set()
        self.private: list[str] = []  # "line N: what" for each private name taken from another module
        self.aliases: dict[str, str] = {}  # a local name bound to a vsr module -> that module
        self.runs = True  # whether the import being read runs (is not under TYPE_CHECKING)
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            self.runs = id(node) not in typing_only
            if isinstance(node, ast.Import):
                self._import(node)
            elif isinstance(node, ast.ImportFrom):
                self._import_from(node)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in self.aliases and _is_private(node.attr)):
                self.private.append(f"line {node.lineno}: {self.aliases[node.value.id]}.{node.attr}")

    def _owner(self, dotted: str) -> str | None:
        """The vsr module that ``dotted`` names, or the nearest package above it; None outside vsr."""
        while dotted and dotted not in self.modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def _edge(self, target: str | None) -> None:
        if target is not None and target != self.name and self.runs:
            self.edges.add(target)

    def _import(self, node: ast.Import) -> None:
        for alias in node.names:
            target = self._owner(alias.name)
            self._edge(target)
            if target is not None:
                # `import vsr.video.decode as d` binds d; `import vsr.video.decode` binds vsr
                self.aliases[alias.asname or alias.name.partition(".")[0]] = target if alias.asname else "vsr"

    def _import_from(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        owner = self._owner(source)
        if owner is None:
            return
        for alias in node.names:
            full = f"{source}.{alias.name}"
            if full in self.modules:  # `from . import cluster`: the submodule itself
                self._edge(full)
                self.aliases[alias.asname or alias.name] = full
            else:
                self._edge(owner)
                if _is_private(alias.name) and owner != self.name:
                    self.private.append(f"line {node.lineno}: from {source} import {alias.name}")


def import_graph() -> dict[str, ModuleImports]:
    files = module_files()
    names = set(files)
    return {name: ModuleImports(name, path, names) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan's algorithm), as the path
    a -> b -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (well under 1000)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, group) for group in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_the_graph_is_read_whole():
    """The parse finds what is known to be there: a lazy import inside a function and a relative import
    from a subpackage (a parser that missed them would pass the tests below vacuously)."""
    graph = import_graph()
    assert "vsr.upscale" in graph["vsr.cli"].edges  # imported inside the command functions
    assert "vsr.video.probe" in graph["vsr.video.transcode"].edges
    assert "vsr.errors" in graph["vsr.train.config"].edges  # `from ..errors import`, a level up
    assert "vsr.train.config" not in graph["vsr.train.loss_types"].edges  # under TYPE_CHECKING only
    assert len(graph) > 40


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"a"}}) == [["a", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = import_graph()
    found = cycles({name: m.edges for name, m in graph.items()})
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_private_name_crosses_a_module():
    graph = import_graph()
    found = [f"{name} {use}" for name, m in sorted(graph.items()) for use in m.private]
    assert not found, "private names used outside their module:\n" + "\n".join(found)


if __name__ == "__main__":
    graph = import_graph()
    if "--graph" in sys.argv[1:]:
        for name, m in sorted(graph.items()):
            print(f"{name}: {', '.join(sorted(m.edges)) or '-'}")
    for circle in cycles({name: m.edges for name, m in graph.items()}):
        print(" -> ".join(circle))
    for name, m in sorted(graph.items()):
        for use in m.private:
            print(f"private: {name} {use}")
