"""Tune's rows of a sweep's trials (:func:`sweep.engine.tuner.fit`: trial id, config, last metrics,
error, and the final status the trials stage sets): a row's point, its selection objective and the
best row by the selection objective, the one definition every stage reads.

With replicates (``search.replicate``: rows whose Tune config carries :data:`POINT_SEED`) the best
is the best *point* over its seeds by :func:`sweep.choice.choose` (the mean, or its lower bound),
and a point is stood for by one row (:func:`point_rows`): its run on the search's seed when that
finished, else its finished seed with the best objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sweep.choice import Choice, PointId, choose, point_id, point_values
from sweep.objective import WORST
from sweep.points import POINT_SEED
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


def replicated(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any row is a replicate: a point trained again on a new seed (``search.replicate``)."""
    return any(POINT_SEED in (r.get("config") or {}) for r in rows)


def point_rows(rows: Sequence[Mapping[str, Any]]) -> dict[PointId, list[Mapping[str, Any]]]:
    """Each point's finished rows with an objective, the row that stands for it first: the one on
    the search's seed (no :data:`POINT_SEED`), else the best objective. In the rows' order."""
    out: dict[PointId, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["status"] == Status.FINISHED and objective_of(row) is not None:
            out.setdefault(point_id(row.get("config") or {}), []).append(row)
    for group in out.values():
        group.sort(key=lambda r: (POINT_SEED in (r.get("config") or {}), -(objective_of(r) or 0.0)))
    return out


def best_choice(rows: Sequence[Mapping[str, Any]], rule: str = "mean") -> tuple[Mapping[str, Any], Choice[PointId]] | None:
    """With replicates among ``rows``: the best point over its seeds by :func:`sweep.choice.choose`
    (``rule``: ``search.replicate.choose``) among the points with a finished seed (a diverged seed
    in the mean at the objective's worst value), with the row that stands for it; None without
    replicates or a finished trial."""
    if not replicated(rows):
        return None
    finished = point_rows(rows)
    values = {p: v for p, v in point_values(rows, objective_of).items() if p in finished}
    chosen = choose(values, rule)
    return None if chosen is None else (finished[chosen.point][0], chosen)


def best_row(rows: Sequence[Mapping[str, Any]], rule: str = "mean") -> Mapping[str, Any] | None:
    """The finished trial with the highest final eval/objective (the selection metric), or None;
    with replicates, the row of the best point over its seeds (:func:`best_choice`)."""
    chosen = best_choice(rows, rule)
    if chosen is not None:
        return chosen[0]
    done = [r for r in rows if r["status"] == Status.FINISHED and objective_of(r) is not None]
    return max(done, key=lambda r: objective_of(r) or 0.0) if done else None
