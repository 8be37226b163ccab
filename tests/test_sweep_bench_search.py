"""The search benchmark's bookkeeping: epochs to reach a target and the hypervolume of a method."""

from __future__ import annotations

import pandas as pd
import pytest

from sweep.bench_search import _outcome


def trials(rows) -> pd.DataFrame:
    """(status, epochs reached, accuracy, GAN-test, objective) per trial, in start order."""
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(len(rows))], "status": [r[0] for r in rows],
        "epochs": pd.array([2] * len(rows), dtype="Int64"), "epochs_done": pd.array([r[1] for r in rows], dtype="Int64"),
        "test_acc": [r[2] for r in rows], "gan_test": [r[3] for r in rows], "objective": [r[4] for r in rows],
    })  # fmt: skip


def test_outcome_counts_epochs_in_start_order_until_the_target():
    coarse = trials([("finished", 2, 0.5, 0.1, 0.3), ("diverged", 1, None, None, 0.0)])
    search = trials([("stopped", 1, 0.2, 0.2, 0.2), ("finished", 2, 0.4, 0.6, 0.5), ("finished", 2, 0.9, 0.9, 0.9)])
    out = _outcome([coarse, search], target=0.5)
    assert out.epochs == 8
    assert out.to_best == 2 + 1 + 1 + 2  # the coarse grid's epochs count first
    assert out.best == pytest.approx(0.9)
    # Front of the finished trials: (0.9, 0.9) dominates the others; the stopped one is no candidate.
    assert out.hypervolume == pytest.approx(0.81)
    assert _outcome([search], target=0.95).to_best is None
