"""Points of a sweep compared honestly: means over every seed, the training noise, tests of differences.

A *point* is a group of trials that differ only in the training seed (``config_key``: a grid
cell, a finalist with its retrains). Everything that ranks points or marks them "not separable"
(Table 2's marks, the candidate Pareto front, the sweep's summary) comes through here:

- :func:`seed_values`: a point's value over every seed that ended. A diverged seed counts as the
  objective counts it, the worst value (0 for accuracy, GAN-test and their objectives), so a point
  whose seeds partly diverged does not look better than it is; stopped, failed and running trials
  are left out (and counted beside the cell).
- :func:`pooled_of`: the run-to-run variance of a column, pooled over every point with ≥ 2 finished
  seeds (:mod:`trainer.pooled`). Diverged seeds are not in it: divergence is a separate outcome,
  shown as ``k/n finished``.
- :func:`estimate`: a point's mean with its 95 % interval: with a pooled variance, x̄ ± t·s/√n (the
  training noise counted); without one (every point has one seed), the run's own interval, which
  covers the evaluation's noise only (:data:`EVALUATION_ONLY` says so wherever it is shown).
- :func:`difference`: A − B for two points: of their means with the pooled variance when there is
  one; otherwise paired over the items both runs were scored on (their per-item outcomes, kept as
  tags by the sweep), or unpaired from their logged intervals.
- :func:`versus_best`: every point against the best, corrected with Holm (:mod:`trainer.compare`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Hashable

import numpy as np
import pandas as pd

from sweep.record import Status
from trainer import compare, items
from trainer.compare import Difference, VersusBest
from trainer.pooled import Pooled, pooled
from trainer.stats import Interval, seeds_interval

# Columns a diverged seed counts in at 0, the worst value of a fraction (and of the accuracy/GAN-test
# objectives); the ground-truth objectives' worst values (-1, -inf) are read from their definition.
FRACTIONS = frozenset({"val_acc", "test_acc", "gan_test", "confirm_test_acc", "confirm_gan_test"})
OBJECTIVES = frozenset({"objective", "confirm_objective"})
# The columns whose pooled run-to-run variance the sweep logs on its parent run (pooled/<col>_sd, _df).
POOLED_COLUMNS = ("objective", "val_acc", "test_acc", "gan_test", "confirm_objective", "confirm_test_acc",
                  "confirm_gan_test")
# Columns and the metrics whose per-item outcomes pair them; the objectives combine two parts.
ITEM_PARTS = {"val_acc": ("val_acc",), "test_acc": ("test_acc",), "gan_test": ("gan_test",),
              "confirm_test_acc": ("confirm_test_acc",), "confirm_gan_test": ("confirm_gan_test",)}
SEEDS = "pooled over seeds"  # the interval counts the training seed's noise
EVALUATION_ONLY = "evaluation only"  # one seed, no pooled variance: the run's own interval
_GROUNDTRUTH_WORST = {"score_alignment": -1.0}  # finite worst values of ground-truth objectives


def objective_definition(rows: pd.DataFrame) -> dict[str, Any] | None:
    """The objective's definition the trials logged (tag ``trial.objective``), or None."""
    if "objective_def" not in rows.columns:
        return None
    found = rows["objective_def"].dropna()
    return json.loads(found.iloc[0]) if len(found) else None


def worst(rows: pd.DataFrame, column: str) -> float | None:
    """The value a diverged seed counts as in ``column``; None where it has none that averages."""
    if column in FRACTIONS:
        return 0.0
    if column in OBJECTIVES:
        definition = objective_definition(rows) or {}
        name = definition.get("name", "weighted")
        return _GROUNDTRUTH_WORST.get(name, None if name == "fisher_divergence" else 0.0)
    return None


def ended(rows: pd.DataFrame, include_stopped: bool = False) -> pd.DataFrame:
    """The seeds that count: finished with every configured epoch, or diverged (with
    ``include_stopped``, stopped early too, as a front over ASHA's trials may ask)."""
    full = rows["epochs_done"].isna() | rows["epochs"].isna() | (rows["epochs_done"] >= rows["epochs"])
    finished = (rows["status"] == Status.FINISHED) & full.fillna(True).astype(bool)
    if include_stopped:
        finished = rows["status"].isin([Status.FINISHED, Status.STOPPED])
    return rows[finished | (rows["status"] == Status.DIVERGED)]


def seed_values(rows: pd.DataFrame, column: str, include_stopped: bool = False) -> list[float]:
    """``column`` over a point's seeds that ended: finished values, diverged seeds at :func:`worst`
    (left out where the column has no finite worst value, or when nothing was logged)."""
    if column not in rows.columns:
        return []
    kept = ended(rows, include_stopped)
    low = worst(rows, column)
    out = []
    for status, value in zip(kept["status"], kept[column]):
        if status == Status.DIVERGED:
            if low is not None:
                out.append(low)
        elif pd.notna(value):
            out.append(float(value))
    return out


def points(frame: pd.DataFrame) -> dict[Hashable, pd.DataFrame]:
    """The frame's points: trials that share every setting but the seed (``config_key``, as
    :func:`analysis.runs.load` computes it); a frame without it has one point per trial."""
    key = frame["config_key"] if "config_key" in frame.columns else frame["run_id"]
    return {k: g for k, g in frame.groupby(key, sort=False)}


def pooled_of(frame: pd.DataFrame, column: str) -> Pooled | None:
    """The run-to-run variance of ``column`` pooled over the points with ≥ 2 finished seeds."""
    if column not in frame.columns:
        return None
    groups = []
    for rows in points(frame).values():
        done = ended(rows)
        groups.append(done.loc[done["status"] == Status.FINISHED, column].dropna().astype(float).tolist())
    return pooled(groups)


def pooled_all(frame: pd.DataFrame, columns: tuple[str, ...] = POOLED_COLUMNS) -> dict[str, Pooled]:
    """:func:`pooled_of` for each column that has one."""
    return {c: p for c in columns if (p := pooled_of(frame, c)) is not None}


def estimate(rows: pd.DataFrame, column: str, pool: Pooled | None,
             include_stopped: bool = False) -> tuple[Interval, str]:
    """A point's mean of ``column`` over its seeds with its 95 % interval, and which interval.

    With ``pool``: x̄ ± t·s/√n over every seed that ended (:data:`SEEDS`). Without: one seed's
    own logged interval (:data:`EVALUATION_ONLY`), or Student's t over the point's own seeds.
    """
    values = seed_values(rows, column, include_stopped)
    if not values:
        return Interval(math.nan, math.nan, math.nan), ""
    if pool is not None:
        return _clip(pool.interval(values), rows, column), SEEDS
    if len(values) >= 2:
        return _clip(seeds_interval(values), rows, column), "Student's t over the point's own seeds"
    return _own(rows, column, include_stopped), EVALUATION_ONLY


def _clip(interval: Interval, rows: pd.DataFrame, column: str) -> Interval:
    """A fraction's interval (and the accuracy/GAN-test objective's) kept within [0, 1]."""
    if column in FRACTIONS or (column in OBJECTIVES and worst(rows, column) == 0.0):
        return Interval(interval.value, max(interval.lo, 0.0), min(interval.hi, 1.0))
    return interval


def _own(rows: pd.DataFrame, column: str, include_stopped: bool = False) -> Interval:
    """The one seed's value with its logged interval (lo = hi = value for a diverged seed)."""
    kept = ended(rows, include_stopped)
    row = kept.iloc[0]
    if row["status"] == Status.DIVERGED:
        low = worst(rows, column)
        return Interval(low, low, low) if low is not None else Interval(math.nan, math.nan, math.nan)
    ends = [float(row.get(f"{column}_{end}", math.nan)) for end in ("lo", "hi")]
    return Interval(float(row[column]), *ends)


def _item_parts(row: pd.Series, column: str) -> list[np.ndarray] | None:
    """The run's per-item outcomes behind ``column`` at the epoch its value is from, or None."""
    if column in OBJECTIVES:
        definition = json.loads(row["objective_def"]) if isinstance(row.get("objective_def"), str) else None
        if definition is None:
            return None
        prefix = "confirm_" if column == "confirm_objective" else ""
        accuracy = "test_acc" if prefix or definition.get("split") == "test" else "val_acc"
        names = {"accuracy": [accuracy], "gan_test": ["gan_test"]}.get(definition["name"], [accuracy, "gan_test"])
        parts = [f"{prefix}{n}" if prefix else n for n in names]
    elif column in ITEM_PARTS:
        parts = list(ITEM_PARTS[column])
    else:
        return None
    if not column.startswith("confirm_"):
        epoch, done = row.get("items_epoch"), row.get("epochs_done")
        if pd.isna(epoch) or pd.isna(done) or int(epoch) != int(done):
            return None  # the outcomes are of an earlier evaluation than the value (a stopped trial)
    codes = [row.get(f"items_{p}") for p in parts]
    if not all(isinstance(c, str) for c in codes):
        return None
    try:
        return [items.decode(c) for c in codes]
    except ValueError:
        return None


def _objective_fn(row: pd.Series):
    from sweep.objective import OBJECTIVES as FORMULAS  # the objective's one definition

    definition = json.loads(row["objective_def"])
    formula, weight = FORMULAS[definition["name"]], definition.get("weight", 0.5)
    if definition["name"] in ("accuracy", "gan_test"):
        return lambda part: formula(part, part, weight)
    return lambda acc, gan: formula(acc, gan, weight)


def difference(a: pd.DataFrame, b: pd.DataFrame, column: str, pool: Pooled | None,
               include_stopped: bool = False) -> Difference:
    """mean(A) − mean(B) of ``column`` for two points (their seeds' rows), as the module says."""
    va, vb = seed_values(a, column, include_stopped), seed_values(b, column, include_stopped)
    if not va or not vb:
        return Difference(math.nan, math.inf)
    if pool is not None:
        return pool.difference(va, vb)
    if len(va) >= 2 or len(vb) >= 2:  # seeds but no pool: each point's own spread (t, unpaired)
        return compare.unpaired(seeds_interval(va), seeds_interval(vb))
    ra, rb = ended(a, include_stopped).iloc[0], ended(b, include_stopped).iloc[0]
    if Status.DIVERGED not in (ra["status"], rb["status"]):
        pa, pb = _item_parts(ra, column), _item_parts(rb, column)
        if pa is not None and pb is not None and [len(x) for x in pa] == [len(x) for x in pb]:
            fn = _objective_fn(ra) if column in OBJECTIVES else None
            return compare.paired(pa, pb, fn)
    return compare.unpaired(_own(a, column, include_stopped), _own(b, column, include_stopped))


def versus_best(
    groups: Mapping[Hashable, pd.DataFrame],
    column: str,
    pool: Pooled | None,
    best: Hashable | None = None,
    minimize: bool = False,
) -> VersusBest | None:
    """Every group (a point's seeds) against the best by ``column`` (largest; smallest with
    ``minimize``), or against ``best`` when given (picked elsewhere, e.g. by the confirmation: the
    family is still every pair, since that choice saw these runs). None with fewer than two
    groups that have a value."""
    sign = -1.0 if minimize else 1.0
    means = {k: float(np.mean(v)) * sign for k, g in groups.items() if (v := seed_values(g, column))}
    if len(means) < 2 or (best is not None and best not in means):
        return None

    def diff(i: Hashable, j: Hashable) -> Difference:
        d = difference(groups[i], groups[j], column, pool)
        return Difference(sign * d.estimate, d.se, d.df, d.how)

    return compare.versus_best(means, diff, best=best, picked_here=True)


def point_means(frame: pd.DataFrame, columns: Sequence[str], include_stopped: bool = False) -> pd.DataFrame:
    """One row per point that has a finished seed (or a stopped one, with ``include_stopped``):
    each of ``columns`` is the mean over its seeds that ended with its interval (:func:`estimate`,
    the pooled variance where one exists) in ``<col>_lo``/``_hi``; ``seeds`` counts the seeds that
    ended, ``finished_seeds`` those that finished, ``interval`` says which interval it is, and
    ``point_key`` is the point's key in :func:`points`. Ids, names and checkpoints are the first
    finished seed's (``run_name`` without the seed when there are several)."""
    columns = [c for c in dict.fromkeys(columns) if c in frame.columns]
    pools = pooled_all(frame, tuple(columns))
    done = [Status.FINISHED, Status.STOPPED] if include_stopped else [Status.FINISHED]
    rows = []
    for key, group in points(frame).items():
        counted = ended(group, include_stopped)
        finished = counted[counted["status"].isin(done)]
        if finished.empty:
            continue
        row = finished.iloc[0].copy()
        row["point_key"], row["seeds"], row["finished_seeds"] = key, len(counted), len(finished)
        if len(counted) > 1 and "run_name" in row:
            row["run_name"] = re.sub(r"\s+s\d+$", "", str(row["run_name"]))
            row["seed"] = pd.NA
        kinds = set()
        for column in columns:
            interval, kind = estimate(group, column, pools.get(column), include_stopped)
            row[column], row[f"{column}_lo"], row[f"{column}_hi"] = interval.value, interval.lo, interval.hi
            if kind:
                kinds.add(kind)
        row["interval"] = " / ".join(sorted(kinds))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*frame.columns, "point_key", "seeds", "finished_seeds", "interval"]).reset_index(drop=True)


def _p_better(d: Difference, sign: float) -> float:
    """One-sided p-value that A is better than B (larger; smaller for a minimized metric, ``sign`` < 0)."""
    return d.p_greater if sign > 0 else Difference(-d.estimate, d.se, d.df).p_greater


def not_dominated(frame: pd.DataFrame, keys: Sequence[Hashable], x: str, y: str, minimize: Sequence[str] = (),
                  include_stopped: bool = False) -> dict[Hashable, bool]:
    """Per point (``keys`` of :func:`points`), whether no other point separably dominates it: q
    separably dominates p when q is at least as good on both metrics and both differences are
    separable (the larger of their two p-values, an intersection-union test), Holm-corrected over
    every pair where one point's estimates dominate the other's. These points are the candidate
    front: the front the noise allows."""
    groups = {k: g for k, g in points(frame).items() if k in set(keys)}
    pools = {c: pooled_of(frame, c) for c in (x, y)}
    sign = {c: -1.0 if c in minimize else 1.0 for c in (x, y)}
    means = {}
    for k, g in groups.items():
        vx, vy = seed_values(g, x, include_stopped), seed_values(g, y, include_stopped)
        if vx and vy:
            means[k] = (sign[x] * float(np.mean(vx)), sign[y] * float(np.mean(vy)))
    family = {}
    for q, (qx, qy) in means.items():
        for p, (px, py) in means.items():
            if q != p and qx >= px and qy >= py and (qx > px or qy > py):
                dx = difference(groups[q], groups[p], x, pools[x], include_stopped)
                dy = difference(groups[q], groups[p], y, pools[y], include_stopped)
                # q better than p on both: the larger of the two one-sided p-values
                family[(q, p)] = max(_p_better(dx, sign[x]), _p_better(dy, sign[y]))
    rejected = compare.holm(family) if family else {}
    dominated = {p for (q, p), yes in rejected.items() if yes}
    return {k: k not in dominated for k in means}
