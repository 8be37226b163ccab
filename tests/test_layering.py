"""trainer/ is a library: its modules import each other without cycles and import no sweep tooling."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[1] / "trainer"
MODULES = sorted(f"trainer.{p.stem}" for p in TRAINER.glob("*.py") if p.stem != "__init__")
FORBIDDEN = ("ray", "optuna", "mlflow")
# What trainer/ may import beyond the standard library and itself.
ALLOWED = {"torch", "torchvision", "numpy", "sklearn", "matplotlib", "yaml", "tqdm", "pydantic", "PIL"}


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
        f"trainer.{p.stem}": {n for n in imports_of(p) if n.startswith("trainer.") and n != f"trainer.{p.stem}"}
        for p in TRAINER.glob("*.py")
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
    for path in TRAINER.glob("*.py"):
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
