"""The import graph: no cycles in sweep/ and analysis/, layers sweep -> analysis -> trainer, Ray in sweep.engine and the search.

Imports are read from the source (module level and inside functions alike), so a lazy import
that would close a cycle counts as much as a top-level one.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sweep", "analysis")
# The files that may import Ray (its API moves fast): the session and Tuner, and the search, whose
# one Ray name is Tune's public Searcher base class.
RAY_MODULES = {"sweep.engine.session", "sweep.engine.tuner", "sweep.engine.trainable", "sweep.engine.progress",
               "sweep.engine.watchdog", "sweep.search"}


def _modules(package: str) -> dict[str, Path]:
    """Every module of ``package``, its subpackages' included, by dotted name."""
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
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


def test_a_trial_worker_imports_neither_optuna_nor_the_analysis():
    """What Ray's workers import for a trial (the pickled trainable's module): the trainer, MLflow
    and Ray Tune, not the search's Optuna or the analysis (seconds of a worker's start-up each)."""
    code = ("import sys, sweep.engine.trainable\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'analysis'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
