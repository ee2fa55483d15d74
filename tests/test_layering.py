"""The arrows of the house, read from the source: every import of every module, parsed.

__main__ -> adapter -> pipeline -> checks -> (ruleset, mime, text, clients, model):
nothing imports a module above it, no check imports another check, the adapter
imports only model, pipeline and runtime, model imports nothing of govmilter,
and no group of modules imports itself back (no cycles). Imports inside
functions and under TYPE_CHECKING count too: an arrow is an arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "milter" / "govmilter"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The govmilter modules `name` imports (a package's name when a name is not a module of it)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: Iterator[str]
        if isinstance(node, ast.Import):
            targets = (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = (f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
        else:
            continue
        found.update(target for target in targets if target in MODULES and target != name)
    return found


GRAPH: dict[str, set[str]] = {name: imports_of(name) for name in MODULES}

# Higher layers may import lower ones, never the reverse. Everything not named here is the floor
# (ruleset, mime, text, clients, config, metrics, decision, domains, network, spool, logfmt, ...).
LAYERS = {
    "govmilter.__main__": 6,
    "govmilter.adapter": 5,
    "govmilter.httpd": 5,
    "govmilter.offline": 5,  # `govmilter scan`: the pipeline on a stored message
    "govmilter.doctor": 5,  # `govmilter doctor`: probes the services the checks use
    "govmilter.runtime": 4,
    "govmilter.pipeline": 3,
}
CHECKS = 2
FLOOR = 1
MODEL = 0


def layer(name: str) -> int:
    if name in LAYERS:
        return LAYERS[name]
    if name == "govmilter.model":
        return MODEL
    if name.startswith("govmilter.checks.") or name == "govmilter.checks":
        return CHECKS
    return FLOOR


def check_of(name: str) -> str | None:
    """The check a module belongs to ("forwarding" for govmilter.checks.forwarding.traces), if any."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "checks" else None


def test_the_graph_is_read() -> None:
    assert {"govmilter.pipeline", "govmilter.checks.forwarding.check", "govmilter.mime.walker"} <= set(MODULES)
    assert "govmilter.checks.forwarding.check" in GRAPH["govmilter.pipeline"]
    assert "govmilter.mime.walker" in GRAPH["govmilter.mime"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_imports_a_module_above_it(name: str) -> None:
    upward = sorted(target for target in GRAPH[name] if layer(target) > layer(name))
    assert upward == [], f"{name} imports {upward}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if check_of(n)))
def test_no_check_imports_another_check(name: str) -> None:
    others = sorted(target for target in GRAPH[name] if check_of(target) not in (None, check_of(name)))
    assert others == [], f"{name} imports {others}"


def test_the_adapter_imports_only_model_pipeline_and_runtime() -> None:
    assert GRAPH["govmilter.adapter"] <= {"govmilter.model", "govmilter.pipeline", "govmilter.runtime"}


def test_the_model_is_the_floor() -> None:
    assert GRAPH["govmilter.model"] == set()


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: a component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert cycles == []
