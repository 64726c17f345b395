"""The layering of DESIGN.md, read from the source: which package may import which, and no import cycle.

The import graph is built with ``ast`` from every module of the five packages; an import anywhere in a
module counts (module level, inside a function, under ``if TYPE_CHECKING``), since each is a dependency
the module cannot work (or type-check) without.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("adasr", "engines", "export", "realtime", "adasr_cli")

#: What each package may import. ``adasr`` is the method; ``engines`` and ``export`` build on it (export writes the
#: manifest engines read); ``realtime`` builds on engines; ``adasr_cli``, the composition root, on all of them.
ALLOWED: dict[str, set[str]] = {
    "adasr": set(),
    "engines": {"adasr"},
    "export": {"adasr", "engines"},
    "realtime": {"adasr", "engines"},
    "adasr_cli": {"adasr", "engines", "export", "realtime"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name an import statement in ``path`` asks for; ``from X import Y`` gives X.Y (Y may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (the named module itself; ``from pkg import name`` → pkg)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {name for name in _imported_names(module, path) if name in modules}
        graph[module] = targets - {module}
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root, successors_of_root in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(successors_of_root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _package_edges(graph: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """Package → imported package → the module-level imports that make that edge (for the failure message)."""
    edges: dict[str, dict[str, list[str]]] = {package: {} for package in PACKAGES}
    for module, targets in graph.items():
        for target in targets:
            source_pkg, target_pkg = module.split(".")[0], target.split(".")[0]
            if source_pkg != target_pkg:
                edges[source_pkg].setdefault(target_pkg, []).append(f"{module} → {target}")
    return edges


def test_the_graph_sees_every_package_and_its_imports() -> None:
    graph = import_graph()
    assert {module.split(".")[0] for module in graph} == set(PACKAGES)
    assert "adasr.keypoints" in graph["engines.talking_head"]  # a module-level import
    assert "adasr.animate" in graph["adasr_cli.model_commands"]  # an import inside a function


def test_each_package_imports_only_the_layers_below_it() -> None:
    edges = _package_edges(import_graph())
    upward = {f"{package} → {target}": sorted(via) for package, targets in edges.items()
              for target, via in targets.items() if target not in ALLOWED[package]}
    assert not upward, upward


def test_only_the_composition_root_imports_every_package() -> None:
    edges = _package_edges(import_graph())
    assert set(edges["adasr_cli"]) == set(PACKAGES) - {"adasr_cli"}
    assert all("adasr_cli" not in targets for targets in edges.values())


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    cycles = [component for component in strongly_connected_components(graph) if len(component) > 1]
    assert not cycles, cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, strongly_connected_components(graph))) == [["a", "b", "c"], ["d"]]


def test_the_wire_format_imports_no_torch() -> None:
    """A peer, a fuzzer or a relay can parse every message without the model's libraries."""
    import subprocess
    import sys

    probe = ("import sys, realtime.protocol; "
             "print(sorted(m for m in ('torch', 'cv2', 'mediapipe', 'onnxruntime', 'aiortc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
