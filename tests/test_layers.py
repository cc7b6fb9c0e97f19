"""The layer rules of DESIGN.md and the absence of import cycles, checked on the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("protocols", "site_node", "hub", "reports")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "flower_app" in parts:
                # The Flower app is its own distribution (surgfed_app); name it as it is imported.
                parts = parts[parts.index("flower_app") + 1 :]
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names this module imports (relative imports resolved), at any depth in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out.add(base)
            # `from pkg import module` imports a module, not only a name
            out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return out


def _internal(imported: str) -> str | None:
    """The project module an import name refers to (its longest known prefix), or None for third parties."""
    parts = imported.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in MODULES:
            return candidate
    return None


GRAPH = {name: {m for i in _imports(name, path) if (m := _internal(i)) and m != name} for name, path in MODULES.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_no_import_cycles() -> None:
    # Package __init__ edges (a package imports its own submodule) are not cycles of logic.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _third_party(name: str) -> set[str]:
    return {i.split(".")[0] for i in _imports(name, MODULES[name]) if _internal(i) is None}


@pytest.mark.parametrize(
    ("package", "allowed"),
    [("protocols", {"protocols"}), ("reports", {"reports", "protocols"})],
)
def test_lower_layers_import_only_what_they_may(package: str, allowed: set[str]) -> None:
    bad = {(n, d) for n, deps in GRAPH.items() if _top(n) == package for d in deps if _top(d) not in allowed}
    assert not bad, f"{package} imports {sorted(bad)}"


def test_site_node_never_imports_hub() -> None:
    bad = {(n, d) for n, deps in GRAPH.items() if _top(n) == "site_node" for d in deps if _top(d) == "hub"}
    assert not bad


def test_hub_imports_site_node_only_in_its_demo() -> None:
    bad = {
        (n, d)
        for n, deps in GRAPH.items()
        if _top(n) == "hub" and not n.startswith("hub.demo")
        for d in deps
        if _top(d) == "site_node"
    }
    assert not bad


def test_flower_only_in_the_flower_app() -> None:
    flower_app = {n for n, p in MODULES.items() if "flower_app" in p.parts}
    bad = sorted(n for n in MODULES if n not in flower_app and "flwr" in _third_party(n))
    assert not bad, f"Flower imported outside hub/flower_app: {bad}"


def test_no_module_over_400_lines() -> None:
    # Every Python file we wrote: the packages, their tests, benchmarks and deploy helpers.
    ours = [p for top in (*PACKAGES, "tests", "bench", "deploy") for p in (REPO / top).rglob("*.py")]
    long = {
        str(p.relative_to(REPO)): c for p in ours if (c := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert len(ours) > len(MODULES) and not long, f"files over {MAX_LINES} lines: {long}"


def test_the_check_sees_the_tree() -> None:
    # Guards the checks above against passing on an empty graph.
    assert {"protocols.contract", "site_node.engine", "hub.coordinator", "reports.pooling"} <= set(MODULES)
    assert "protocols.contract" in GRAPH["site_node.engine"]
