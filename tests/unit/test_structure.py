"""The shape of `helper/`: no import circle between its modules -- counting imports made only
for type checking and imports inside functions, which hide a circle rather than remove it --
and no module so long that it should have been split, unless it says at its top why not.

Read from the source with `ast`, without importing anything."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "helper"
LONG = 500  # lines
# What a long module's docstring says, followed by its reason.
REASON = "Why this module is long:"
# Long modules whose reason lives here, not in them (modules rewritten elsewhere).
KNOWN_LONG: dict[str, str] = {}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                # `from . import socks` imports the module socks; `from .x import y`, module x.
                child = f"{prefix}.{alias.name}"
                found.add(child if child in known else prefix)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as one circle each."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(_circle(sorted(group), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _circle(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One import path that leaves the group's first module and comes back to it."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(graph[node] & members):
            if other == start:
                return [*paths[node], start]
            if other not in paths:
                paths[other] = [*paths[node], other]
                queue.append(other)
    return group  # unreachable for a strongly connected group


def test_the_import_graph_is_read() -> None:
    graph = import_graph()
    assert "helper.engine" in graph and "helper.proxy.server" in graph
    assert "helper.routing" in graph["helper.engine"]
    # Relative imports of a package's own modules resolve to them.
    assert "helper.proxy.socks" in graph["helper.proxy.mixed"]


def test_no_import_circle_in_helper() -> None:
    found = cycles(import_graph())
    assert not found, "import circles (each import counts, TYPE_CHECKING ones too):\n" + "\n".join(
        " -> ".join(circle) for circle in found
    )


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_long_modules_say_why() -> None:
    unexplained = []
    for path in modules().values():
        lines = path.read_text().count("\n")
        if lines <= LONG:
            continue
        where = str(path.relative_to(ROOT))
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if REASON not in docstring and where not in KNOWN_LONG:
            unexplained.append(f"{where} ({lines} lines)")
    assert not unexplained, (
        f"modules over {LONG} lines without '{REASON} ...' in their docstring: "
        + ", ".join(unexplained)
    )
