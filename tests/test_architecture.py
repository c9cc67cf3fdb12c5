"""The package's shape, as docs/architecture.md draws it: layers, no import cycle, rooms of at most 500 lines.

Imports are read from the source (``ast``), lazy ones inside functions included; the
imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skillfit"

# Lowest first. A module may import its own layer and the layers below, never one above.
LAYERS = {
    "foundation": ("_warnings", "_validation", "_version", "_inputs", "_devices", "callbacks", "metrics"),
    "skills": ("skills",),
    "backbones": ("backbones", "_backbone_loading", "_precision"),
    "estimators": ("estimators",),
    "top": ("__init__", "datasets", "loggers", "plotting"),
}
# The training runtime and the formats of persistence know no estimator: these are the estimator-facing modules.
ESTIMATOR_FACING = ("_base", "_adapt", "_partial_fit", "_similarity", "_model_build", "_validation_data",
                    "_prediction", "_hooks", "classifier", "seq2seq", "poly", "cpoly", "lora", "mtlora", "pemt")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The skillfit modules (or packages) that ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "skillfit":
                    for alias in child.names:
                        full = f"{target}.{alias.name}"
                        found.add(full if full in MODULES else target)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.split(".")[0] == "skillfit")
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else "__init__"
    for rank, (_, roots) in enumerate(LAYERS.items()):
        if first in roots:
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                connect(target)
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
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return components


def test_the_graph_is_read():
    """The reader finds known edges, so the checks below cannot pass on an empty graph."""
    assert "skillfit.estimators._training.loop" in GRAPH["skillfit.estimators._training.run_context"]
    assert "skillfit.skills.context" in GRAPH["skillfit.skills.routing"]
    assert "skillfit.estimators._runtime" in GRAPH["skillfit.datasets._tiny"]  # a lazy import, inside a function


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = [f"{source} -> {target}" for source, targets in GRAPH.items() for target in targets
              if _layer(target) > _layer(source)]
    assert upward == []


def test_no_module_imports_the_package_that_contains_it():
    inward = [f"{source} -> {target}" for source, targets in GRAPH.items() for target in targets
              if source.startswith(target + ".") and MODULES[target].name == "__init__.py"]
    assert inward == []


@pytest.mark.parametrize("room", ["_training", "_persistence", "_task_free"])
def test_the_runtime_rooms_import_no_estimator(room):
    """The training runtime, the persistence formats and task-free prediction take networks and data, not estimators.

    The one exception is ``_persistence.saving``, the estimator's side of persistence.
    """
    facing = {f"skillfit.estimators.{name}" for name in ESTIMATOR_FACING} | {"skillfit.estimators"}
    found = [f"{source} -> {target}" for source, targets in GRAPH.items()
             if source.startswith(f"skillfit.estimators.{room}") and source != "skillfit.estimators._persistence.saving"
             for target in targets if target in facing]
    assert found == []


def test_every_module_holds_at_most_500_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
