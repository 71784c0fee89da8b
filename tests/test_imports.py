"""The package's layout holds: arrows point one way, no import cycle, leaves stay light.

The layers are the README's "How the code is laid out"; a module may import its own
layer (without a cycle) and the layers listed for it. Every import counts, those
inside functions and under TYPE_CHECKING too: a cycle through a deferred import
still ties the two modules together.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ccgroupd"

LEAVES = "leaves"
ALLOWED: dict[str, set[str]] = {
    LEAVES: set(),
    "kernel": {LEAVES},
    "limits": {"kernel", LEAVES},
    "config": {"limits", LEAVES},
    "engine": {"config", "limits", "kernel", LEAVES},
    "daemon": {"engine", "config", "limits", "kernel", LEAVES},
    "client": {LEAVES},
    "main": {"daemon", LEAVES},
}
# Layers whose modules may import nothing but the standard library and each other.
STANDARD_LIBRARY_ONLY = {LEAVES, "client"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return LEAVES  # `from ccgroupd import __version__`
    if parts[1] in ALLOWED:
        return parts[1]
    return LEAVES


def is_module(dotted: str) -> bool:
    return PACKAGE.parent.joinpath(*dotted.split(".")).with_suffix(".py").exists()


def imports_of(path: Path) -> set[str]:
    """Every module named by an import in the file, resolved to a full dotted name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import; spell the package out")
            assert node.module is not None
            found.add(node.module)
            # `from ccgroupd.client import ctl` imports the module ccgroupd.client.ctl.
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if is_module(f"{node.module}.{alias.name}"))
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = imports_of(path)
    return graph


GRAPH = package_graph()


def test_the_graph_sees_the_package() -> None:
    assert {"ccgroupd.kernel.cgroupfs", "ccgroupd.daemon.daemon",
            "ccgroupd.client.ctl"} <= GRAPH.keys()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module: str) -> None:
    layer = layer_of(module)
    wrong = sorted(
        target for target in GRAPH[module]
        if target.split(".")[0] == "ccgroupd" and (target_layer := layer_of(target)) != layer
        and target_layer not in ALLOWED[layer])
    assert wrong == [], f"{module} ({layer}) may import only {sorted(ALLOWED[layer])}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer_of(m) in STANDARD_LIBRARY_ONLY))
def test_leaves_and_the_client_import_only_the_standard_library(module: str) -> None:
    outside = sorted(target for target in GRAPH[module]
                     if target.split(".")[0] not in sys.stdlib_module_names | {"ccgroupd"})
    assert outside == []


@pytest.mark.parametrize("package", sorted(
    m for m in GRAPH if PACKAGE.parent.joinpath(*m.split(".")).is_dir()))
def test_package_init_files_are_empty(package: str) -> None:
    init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
    if package == "ccgroupd":
        # The version, the one thing every entry point and the build script read.
        assert ast.unparse(ast.parse(init.read_text())).startswith('"""')
        return
    assert init.read_text() == ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle among the package's modules, as a path that starts and ends in one module."""
    edges = {module: sorted(t for t in targets if t in graph and t != module)
             for module, targets in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    assert find_cycle(GRAPH) is None


def test_find_cycle_finds_one_through_a_deferred_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_wrong_arrow_is_caught() -> None:
    assert "client" not in ALLOWED["kernel"]
    assert layer_of("ccgroupd.daemon.monitor.core") == "daemon"
    assert layer_of("ccgroupd.values") == LEAVES
    assert layer_of("ccgroupd.config") == "config"
