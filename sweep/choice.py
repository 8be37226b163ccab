"""The search's choice over a point's seeds: one rule for the live searcher, the replay and the report.

A *point* is a trial's settings without its training seed (a grid point's key, or the sampled
values); with ``search.replicate`` a point is trained on several seeds. Each seed that ended gives
a :data:`SeedValue`: its final objective and whether it diverged (a diverged seed counts at the
objective's worst value in the mean, and is left out of the run-to-run variance: divergence is a
separate outcome, as in ``analysis.verdicts``). :func:`ranked` orders points by their mean;
:func:`choose` picks one by the mean or by the lower bound of the mean with the run-to-run variance
pooled over every point with two finished seeds (:mod:`trainer.pooled`). Plain Python: the report
can use it without Ray or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sweep.config import SweepConfig
from sweep.points import POINT_SEED
from sweep.record import Status
from trainer.pooled import Pooled, pooled
from trainer.stats import Interval

K = TypeVar("K", bound=Hashable)
PointId = tuple[tuple[str, Any], ...]  # a point's params (Tune config without its seed), sorted
# A point's value on one seed that ended: (final objective, diverged). A diverged seed counts at
# the objective's worst value in the mean and is left out of the run-to-run variance (divergence
# is a separate outcome, as in analysis.verdicts).
SeedValue = tuple[float, bool]


def mean_of(values: Sequence[SeedValue]) -> float:
    return math.fsum(v for v, _ in values) / len(values)


def ranked(points: Mapping[K, Sequence[SeedValue]]) -> list[K]:
    """The points with at least one ended seed, best mean first (ties: in the mapping's order)."""
    order = {p: i for i, p in enumerate(points)}
    return sorted((p for p, v in points.items() if v), key=lambda p: (-mean_of(points[p]), order[p]))


def pooled_of(points: Mapping[K, Sequence[SeedValue]]) -> Pooled | None:
    """The run-to-run variance pooled over the points with >= 2 finished (not diverged) seeds."""
    return pooled([v for v, diverged in values if not diverged] for values in points.values())


@dataclass(frozen=True)
class Choice(Generic[K]):
    """The search's choice: ``point``, its mean over ``seeds`` seeds with the 95 % interval
    x̄ ± t·s/√n from the ``pool``ed run-to-run variance (NaN bounds while no point has two
    finished seeds), and the rule that chose it."""

    point: K
    estimate: Interval
    seeds: int
    pool: Pooled | None
    rule: str


def choose(points: Mapping[K, Sequence[SeedValue]], rule: str = "mean") -> Choice[K] | None:
    """The best point over its seeds (None: no point has an ended seed). ``rule`` "mean": the best
    mean; "lower": the best lower 95 % bound of the mean, x̄ − t·s/√n with the pooled variance
    (:mod:`trainer.pooled`), which prefers a point measured on more seeds unless another beats it
    by more than the noise; with no pooled variance yet, the best mean. Ties: the mapping's order."""
    if rule not in ("mean", "lower"):
        raise ValueError(f"choose: rule {rule!r} is neither 'mean' nor 'lower'")
    order = ranked(points)
    if not order:
        return None
    pool = pooled_of(points)

    def estimate(p: K) -> Interval:
        values = [v for v, _ in points[p]]
        return pool.interval(values) if pool is not None else Interval(mean_of(points[p]), math.nan, math.nan)

    best = order[0]
    if rule == "lower" and pool is not None:
        best = max(order, key=lambda p: (estimate(p).lo, -order.index(p)))
    return Choice(best, estimate(best), len(points[best]), pool, rule)


def describe(c: Choice[Any]) -> str:
    """``objective 0.853 over 2 seed(s) ([0.750, 0.956], pooled run-to-run sd 0.046 on 3 d.f.; by
    the best lower 95 % bound of the mean)``: the choice as the searcher and the report print it."""
    iv, pool = c.estimate, c.pool
    spread = (f"[{iv.lo:.3f}, {iv.hi:.3f}], pooled run-to-run sd {pool.sd:.3f} on {pool.df} d.f." if pool
              else "no point has two finished seeds yet")
    rule = "best mean" if c.rule == "mean" else "best lower 95 % bound of the mean"
    return f"objective {iv.value:.3f} over {c.seeds} seed(s) ({spread}; by the {rule})"


def rule_of(cfg: SweepConfig) -> str:
    """The rule a sweep chooses among its points' seeds by: ``search.replicate.choose``, else the mean."""
    return cfg.search.replicate.choose if cfg.search.replicate is not None else "mean"


def point_id(params: Mapping[str, Any]) -> PointId:
    """A point's identity from a Tune config: its items, sorted, without :data:`POINT_SEED`."""
    return tuple(sorted((k, v) for k, v in params.items() if k != POINT_SEED))


def point_values(rows: Iterable[Mapping[str, Any]], objective_of: Callable[[Mapping[str, Any]], float | None]
                 ) -> dict[PointId, list[SeedValue]]:
    """Each point's ended seeds from Tune's result rows (``config``, ``status`` as the driver sets
    it): finished and diverged seeds with their final objective, in the rows' order."""
    out: dict[PointId, list[SeedValue]] = {}
    for row in rows:
        value = objective_of(row)
        if row["status"] in (Status.FINISHED, Status.DIVERGED) and value is not None and math.isfinite(value):
            out.setdefault(point_id(row.get("config") or {}), []).append((float(value), row["status"] == Status.DIVERGED))
    return out
