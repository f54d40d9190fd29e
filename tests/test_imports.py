"""No import cycle in mnistcli/, counting the imports inside functions.

Every module and package under mnistcli/ is parsed with `ast` (nothing is imported); every
`import mnistcli...` and `from mnistcli... import ...` (absolute or relative, at module level
or inside a function) is an edge, except those under `if TYPE_CHECKING:`, which never run.
`from pkg import name` is an edge to the module pkg.name when there is one, else to pkg.
Importing a.b.c also runs a/__init__ first, but that implied edge is left out: a package's
__init__ importing its own submodules is no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = "mnistcli"


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package (packages as their
    __init__.py), so a module and a package of the same idea (cli.py, cli/) both work."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules `name` (at `path`) imports, anywhere but under TYPE_CHECKING."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def target(dotted: str) -> None:
        if dotted.split(".")[0] == PACKAGE:
            # the longest project module that `dotted` names or lies in
            parts = dotted.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                found.add(".".join(parts))

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in (or is)
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = here[: len(here) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target(f"{source}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    found.discard(name)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts ([a, b, a]), or None: depth-first search,
    a node met again while still on the path closes a cycle."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def walk(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond, no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]


def test_imports_are_read_everywhere_but_under_type_checking(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "c.py", "d.py", "sub/__init__.py", "sub/e.py"):
        (pkg / name).write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from mnistcli import b\n"
        "if TYPE_CHECKING:\n    from mnistcli.c import Thing\n"
        "def late():\n    from mnistcli.sub.e import f\n"
    )
    (pkg / "sub" / "e.py").write_text("from ..d import x\nfrom . import nothing_here\n")
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.a"] == {f"{PACKAGE}.b", f"{PACKAGE}.sub.e"}
    assert graph[f"{PACKAGE}.sub.e"] == {f"{PACKAGE}.d", f"{PACKAGE}.sub"}
    (pkg / "d.py").write_text("def g():\n    import mnistcli.a\n")
    assert find_cycle(import_graph(tmp_path)) == [
        f"{PACKAGE}.a",
        f"{PACKAGE}.sub.e",
        f"{PACKAGE}.d",
        f"{PACKAGE}.a",
    ]


def test_mnistcli_has_no_import_cycle():
    graph = import_graph()
    assert f"{PACKAGE}.loading" in graph and f"{PACKAGE}.checkpoint" in graph  # it read them
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
