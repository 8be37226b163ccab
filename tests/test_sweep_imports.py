"""The import graph: no cycles in sweep/ and analysis/, layers sweep -> analysis -> trainer, Ray in one file.

Imports are read from the source (module level and inside functions alike), so a lazy import
that would close a cycle counts as much as a top-level one.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sweep", "analysis")
# The files that may import Ray (its API moves fast): the session and Tuner, and the search, whose
# one Ray name is Tune's public Searcher base class.
RAY_MODULES = {"sweep.tune", "sweep.search"}


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).glob("*.py")):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        out[name] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports anywhere in its body: project modules by their dotted name
    (``from sweep import tracking`` is ``sweep.tracking``), others by their top-level package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            found.add(name if name in known else name.split(".")[0])
    return found


def graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules it imports (project modules by dotted name, others by package)."""
    modules = {name: path for package in packages for name, path in _modules(package).items()}
    known = set(modules)
    return {name: _imports(path, known) for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the keys of ``edges`` (as a path that returns to its start), or None."""
    inner = {m: {d for d in deps if d in edges and d != m} for m, deps in edges.items()}
    try:
        tuple(graphlib.TopologicalSorter(inner).static_order())
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in edges.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert cycle({"a": {"b"}, "b": {"c", "os"}, "c": {"a"}}) is not None
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"os"}}) is None


def test_sweep_and_analysis_import_no_cycle():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_layers_sweep_then_analysis_then_trainer():
    edges = graph()
    # The trainer is the library: it imports neither the sweep nor the analysis.
    trainer = graph(("trainer",))
    for module, deps in trainer.items():
        assert not deps & {"sweep", "analysis", *edges}, f"{module} imports the application: {deps & {'sweep', 'analysis', *edges}}"
    # The analysis reads what the sweep wrote, without the sweep's Ray driver: of sweep/ it may
    # reach only modules that import no Ray, Optuna or Tune code.
    for module in (m for m in edges if m.startswith("analysis")):
        for dep in reachable(edges, module):
            assert dep in edges or dep not in {"ray", "optuna"}, f"{module} reaches {dep}"
            if dep.startswith("sweep"):
                assert not edges[dep] & {"ray", "optuna"} and dep not in RAY_MODULES, f"{module} reaches {dep}"


def test_ray_is_imported_in_the_session_and_the_search_only():
    users = {m for m, deps in graph().items() if "ray" in deps}
    assert users == RAY_MODULES


@pytest.mark.parametrize("module", ["sweep.record"])
def test_the_trial_record_imports_no_service(module):
    """The record is plain data: analysis and trainer-side readers import it without a service."""
    deps = graph()[module]
    assert not deps & {"ray", "optuna", "mlflow", "torch"}, deps
