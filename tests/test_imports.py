"""No import cycles among edgecnn's modules, lazy (function-level) imports included.

The graph is read from the source with ast, under the installed names (export/ is edgecnn.export,
runtime/ is edgecnn.runtime). Imports under ``if TYPE_CHECKING:`` never run, so they are left out, and
so is the implicit import of a module's parent package: a package that imports its own submodules
(as edgecnn.models imports its families) is the normal shape, not a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"edgecnn": ROOT / "edgecnn", "edgecnn.export": ROOT / "export", "edgecnn.runtime": ROOT / "runtime"}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every .py file of the installed package."""
    out: dict[str, tuple[Path, bool]] = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if prefix == "edgecnn" and parts[0] in ("export", "runtime"):
                continue  # not there in this layout; listed under their own folders above
            package = parts[-1] == "__init__"
            name = ".".join([prefix, *(parts[:-1] if package else parts)])
            out[name] = (path, package)
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules in ``known`` that module ``name`` imports anywhere (top level or inside functions)."""
    tree = ast.parse(source)
    skip = _type_checking_only(tree)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from . import mobilenet` imports the submodule
                    found.add(sub)
                elif target in known:
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path.read_text(), package, known) for name, (path, package) in files.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph is acyclic (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    # The control case: the search must see a cycle through a lazy import, and not invent one in a diamond.
    source = {"p.a": "from . import b\n", "p.b": "def f():\n    from .c import x\n", "p.c": "import p.a\n"}
    graph = {name: imports_of(name, text, False, set(source)) for name, text in source.items()}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    assert imports_of("p.b", typed, False, {"p.a", "p.b"}) == set()


def test_the_graph_covers_the_three_source_folders() -> None:
    graph = import_graph()
    assert {"edgecnn.train", "edgecnn.export.onnx_export", "edgecnn.runtime.classifier"} <= set(graph)
    assert "edgecnn.models.registry" in graph["edgecnn.models"]  # edges are really read


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_registry_imports_no_model_family() -> None:
    graph = import_graph()
    assert not {m for m in graph["edgecnn.models.registry"] if m.startswith("edgecnn.models.")}
