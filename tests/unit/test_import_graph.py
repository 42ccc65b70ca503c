"""The layer's import graph has no cycle, counting function-local imports too (a cycle hidden behind a
function-local import still ties the modules together: neither can be read, tested or moved alone).

Given every module of layers/isthmus, shared/isthmus_contracts and functions/, parsed with ``ast``
(module-level and function-local imports alike), when the graph of imports between them is walked,
then no module reaches itself again; a cycle fails the test naming its modules in order.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"isthmus": ROOT / "layers" / "isthmus", "isthmus_contracts": ROOT / "shared" / "isthmus_contracts"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for the layer packages and each function folder (its own namespace)."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    for path in (ROOT / "functions").rglob("*.py"):
        found["functions." + ".".join(path.relative_to(ROOT / "functions").with_suffix("").parts)] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``module`` imports anywhere in its file (``from a import b`` counts a.b when b is a
    module, else a); relative imports resolved against the module's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` of a package path: the deepest known module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(graph, component) for component in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle inside the component, from its first module (breadth first back to it)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return sorted(component)


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imported(module, path, known) for module, path in known.items()}


def test_the_walk_finds_a_cycle_when_there_is_one() -> None:
    # given a graph with a three-module cycle hidden among acyclic edges
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    # when it is walked, then the cycle is named in import order
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_the_graph_sees_function_local_imports() -> None:
    # given the layer as it is: when its graph is built, then it has edges and knows the layer's modules
    graph = import_graph()
    assert "isthmus.services.inference.inference" in graph
    assert sum(len(targets) for targets in graph.values()) > 100


def test_no_import_cycle_in_the_layer_or_the_functions() -> None:
    # given every module's imports, module-level and function-local; when the graph is walked
    cycles = find_cycles(import_graph())
    # then no module reaches itself again
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


# What the pure routing layer may import: errors, the control-plane data model, itself and the contracts. Not a
# service, an adapter, a backend or the composition root: routing takes plain data and does no I/O.
ROUTING_MAY_IMPORT = ("isthmus.errors", "isthmus.control.models", "isthmus.routing", "isthmus_contracts")


def test_the_routing_layer_is_pure() -> None:
    # given the import graph; when the modules of isthmus.routing are read
    graph = import_graph()
    routing = {m: targets for m, targets in graph.items() if m == "isthmus.routing" or m.startswith("isthmus.routing.")}
    # then they import nothing of the layer but plain data and each other
    climbing = {m: sorted(t for t in targets if not t.startswith(ROUTING_MAY_IMPORT)) for m, targets in routing.items()}
    assert routing and not any(climbing.values()), climbing


def test_services_import_ports_not_adapters() -> None:
    # given the import graph; when the modules of isthmus.services are read (function-local imports included)
    graph = import_graph()
    services = {m: targets for m, targets in graph.items() if m.startswith("isthmus.services.")}
    # then none imports an adapter: the composition root (isthmus.wiring) builds the adapters and passes them in
    reaching = {m: sorted(t for t in targets if t.startswith("isthmus.adapters")) for m, targets in services.items()}
    assert services and not any(reaching.values()), {m: t for m, t in reaching.items() if t}
