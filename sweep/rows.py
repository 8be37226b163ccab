"""Tune's rows of a sweep's trials (:func:`sweep.engine.tuner.fit`: trial id, config, last metrics,
error, and the final status the trials stage sets): a row's point, its selection objective and the
best row by the selection objective, the one definition every stage reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sweep.objective import WORST
from sweep.record import Status
from trainer import keys


def objective_of(row: Mapping[str, Any]) -> float | None:
    """The trial's final eval/objective; None when it never evaluated (or never started).

    Tune's last result carries the objective of the trial's latest evaluation, or the worst
    value before the first one; a diverged trial's worst value is its real objective.
    """
    m = row["metrics"]
    if row["status"] == Status.DIVERGED:
        return m.get(keys.OBJECTIVE)
    value = m.get(keys.OBJECTIVE)
    return value if value is not None and (value != WORST or keys.GAN_TEST in m) else None


def point_of(row: Mapping[str, Any]) -> str:
    """The trial's display name."""
    return str(row["metrics"].get("point", row["trial_id"]))


def best_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The finished trial with the highest final eval/objective (the selection metric), or None."""
    done = [r for r in rows if r["status"] == Status.FINISHED and objective_of(r) is not None]
    return max(done, key=lambda r: objective_of(r) or 0.0) if done else None
