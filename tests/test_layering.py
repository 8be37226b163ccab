"""Layering: trainer/ is a library (no cycles, no sweep tooling); statuses are spelled only by their
owners; the MLflow record (sweep/record.py, sweep/tracking.py) imports nothing of the driver."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[1] / "trainer"
# Every module of trainer/, its benchmarks (trainer/bench/) included; a __main__ runs when imported.
SOURCES = sorted(TRAINER.rglob("*.py"))


def module_name(path: Path) -> str:
    """``trainer.bench.measures`` for trainer/bench/measures.py (a package: its name)."""
    parts = path.relative_to(TRAINER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in SOURCES if p.stem not in ("__init__", "__main__"))
FORBIDDEN = ("ray", "optuna", "mlflow")
# What trainer/ may import beyond the standard library and itself.
# SciPy comes with scikit-learn (and with it onto a bare GPU machine): its t quantiles, no copy of them.
ALLOWED = {"torch", "torchvision", "numpy", "sklearn", "scipy", "matplotlib", "yaml", "tqdm", "pydantic", "PIL"}


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement in ``path``, at any depth (function bodies too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add(node.module)
            # `from trainer import keys` imports the module trainer.keys.
            names |= {f"{node.module}.{a.name}" for a in node.names if (TRAINER / f"{a.name}.py").exists()
                      and node.module == "trainer"}
    return names


def graph() -> dict[str, set[str]]:
    """trainer module -> the trainer modules it imports (the package itself left out)."""
    return {
        module_name(p): {n for n in imports_of(p) if n.startswith("trainer.") and n != module_name(p)}
        for p in SOURCES
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules, or None: depth-first search with white/grey/black marks."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    # The checker itself: it must see a cycle through a function-level import and miss none.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("def f():\n    from trainer.train import run\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "trainer.train" for n in ast.walk(tree))


def test_trainer_import_graph_is_acyclic_including_function_level_imports():
    edges = graph()
    assert "trainer.checkpoint" in edges and edges["trainer.judge"]  # the graph was read
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_trainer_imports_only_its_dependencies():
    for path in SOURCES:
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            assert top == "trainer" or top in ALLOWED or top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_every_module_imports_in_a_fresh_interpreter_without_sweep_tooling():
    # One fresh interpreter, modules in sorted order; each must import, and none may bring in ray,
    # optuna or mlflow (an indirect import through a dependency counts too).
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=TRAINER.parent, timeout=300)
    assert result.returncode == 0, result.stderr


# --- One owner per fact: statuses, and the record's layer -------------------------------------

ROOT = TRAINER.parent
STATUS_OWNERS = {ROOT / "trainer" / "keys.py", ROOT / "sweep" / "record.py"}


def status_literals(source: str, words: set[str]) -> list[tuple[int, str]]:
    """String constants in ``source`` that spell a status: the word alone, or quoted inside a
    longer string (an MLflow filter such as ``"tags.x = 'diverged'"``). Docstrings and comments
    are prose, not code, and are not checked."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            if text in words or any(f"{q}{w}{q}" in text for w in words for q in "'\""):
                found.append((node.lineno, text))
    return found


def test_status_literal_check_finds_planted_literals():
    from trainer.keys import Status

    words = {str(s) for s in Status}
    planted = (
        '"""A module docstring may say \'diverged\'."""\n'
        'x = "diverged"\n'
        'y = f"status = \'finished\' and {x}"\n'
        'z = "a diverged trial"  # "stopped"\n'
        'def f():\n    """Returns \'failed\'."""\n    return "running"\n'
    )
    assert [line for line, _ in status_literals(planted, words)] == [2, 3, 7]


def test_no_status_literal_outside_its_owners():
    from trainer.keys import Status

    words = {str(s) for s in Status}
    assert words >= {"running", "finished", "diverged", "stopped", "failed"}
    checked = 0
    for package in ("trainer", "sweep", "analysis"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in STATUS_OWNERS:
                continue
            checked += 1
            hits = status_literals(path.read_text(), words)
            assert not hits, f"{path.relative_to(ROOT)}: status literal(s) {hits}; use trainer.keys.Status"
    assert checked > 30  # the packages were read


def sweep_imports(module: str) -> set[str]:
    """The modules of ``sweep`` that ``sweep/<module>.py`` imports at run time, at any depth;
    imports under ``if TYPE_CHECKING:`` (type hints only) are left out."""
    tree = ast.parse((ROOT / "sweep" / f"{module}.py").read_text())
    hints_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                  and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hints_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sweep.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "sweep":  # from sweep import lock
            found |= {f"sweep.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("sweep."):
            found.add(node.module)
    return found


def test_the_record_and_its_writer_import_nothing_of_the_driver():
    # record.py names what a trial is stored under; tracking.py is the one MLflow writer. Neither
    # may know the driver: record imports no sweep module, tracking only record and the paths
    # helper, and the paths helper none at run time.
    assert sweep_imports("record") == set()
    assert sweep_imports("tracking") <= {"sweep.record", "sweep.paths", "sweep.runs_view"}
    assert "sweep.record" in sweep_imports("tracking")  # the imports were read
    assert sweep_imports("runs_view") == {"sweep.record"}
    assert sweep_imports("judge_runs") == {"sweep.record", "sweep.tracking"}
    assert sweep_imports("paths") == set()
    assert sweep_imports("driver") >= {"sweep.tracking", "sweep.kill_points"}  # the checker sees both forms
    # In a fresh interpreter: importing the writer brings in no other sweep module, even indirectly.
    code = (
        "import sys, sweep.tracking\n"
        "extra = sorted(m for m in sys.modules if m.startswith('sweep.')"
        " and m not in ('sweep.tracking', 'sweep.record', 'sweep.paths', 'sweep.runs_view'))\n"
        "assert not extra, extra\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr


# The driver's stages in the order a sweep passes them (sweep/driver.py's docstring).
STAGES = ("checks", "judge_stage", "trials", "confirm", "finish")


def test_the_driver_calls_its_stages_and_no_stage_calls_back():
    # Each stage is a module with its own job: the driver imports each one, no module of sweep
    # imports the driver but its entry point (sweep/run.py), and no stage imports a later one (a stage takes what earlier ones found
    # as its input, never a callback into a later stage or the driver).
    assert {f"sweep.{s}" for s in STAGES} <= sweep_imports("driver")
    for path in sorted((ROOT / "sweep").rglob("*.py")):
        module = path.relative_to(ROOT / "sweep").with_suffix("").as_posix()
        if module not in ("driver", "run"):
            assert "sweep.driver" not in sweep_imports(module), f"sweep/{module}.py imports the driver"
    for i, stage in enumerate(STAGES):
        later = {f"sweep.{s}" for s in STAGES[i + 1:]}
        assert not sweep_imports(stage) & later, f"sweep/{stage}.py imports a later stage: {sweep_imports(stage) & later}"
    assert "sweep.trials" in sweep_imports("finish") and "sweep.checks" in sweep_imports("trials")  # read
