"""Bad input and environment refused up front: exit 2, one line naming the problem, nothing
written (non-finite numbers, and the other refusals of the faults table in docs/sweep.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import run_sweep


def _refused(capsys, args: list[str], limit_s: float = 30.0) -> str:
    """Run the driver in process; it must exit 2 within ``limit_s`` with one error line, which is returned."""
    started = time.time()
    code = run_sweep(args)
    seconds = time.time() - started
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert seconds < limit_s, f"refused after {seconds:.1f} s"
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1, captured.err
    return lines[0]


def _nothing_written(folder: Path) -> None:
    for name in ("mlruns", "sweep_results", "mlflow.db"):
        assert not (folder / name).exists(), name


@pytest.mark.parametrize(
    "sets, key",
    [
        (["search.grid.loss.lam=[.inf]"], "search.grid.loss.lam[0]=inf"),
        (["search.grid.loss.mu=[1.0e-3, .nan]"], "search.grid.loss.mu[1]=nan"),
        (["trainer.optim.lr=-.inf"], "trainer.optim.lr=-inf"),
        (["search.points=[{loss.preset: baseline, optim.lr: .inf}]"], "search.points[0].optim.lr=inf"),
        (["search.method=optuna", "search.seeds=[0]", "search.grid={}", "search.points=[]",
          "search.space.loss.lam={low: 1.0e-4, high: .inf}"], "search.space.loss.lam.high=inf"),
        (["judge.lr=.nan"], "judge.lr=nan"),
    ],
    ids=["grid inf", "grid nan", "base -inf", "point", "optuna space", "judge"],
)
def test_non_finite_numbers_anywhere_are_refused_naming_the_key(sets, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = sum((["--set", s] for s in [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sets]), [])
    line = _refused(capsys, args)
    assert key in line and "finite" in line, line
    _nothing_written(tmp_path)
