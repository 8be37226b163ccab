"""The training seed's noise: a run-to-run variance pooled over every point trained with ≥ 2 seeds.

Two runs of one point that differ only in the training seed (weight initialisation, data order,
augmentation, the sample noise of their own evaluation) give different numbers, and on the digits
table that spread is several times the evaluation's own (docs/results.md). A point trained with
two or three seeds cannot measure its own spread (Student's t with 1 degree of freedom is ±12.7
standard errors), but if the spread is alike across points, every point with ≥ 2 seeds
contributes to one estimate:

    s² = Σ_cells Σ_seeds (x − x̄_cell)² / Σ_cells (n_cell − 1)

on Σ (n_cell − 1) degrees of freedom (the one-way ANOVA's within-cell mean square). Any mean over
n seeds then has the interval x̄ ± t_df · s/√n (:meth:`Pooled.interval`), and two means differ by
:func:`trainer.compare.of_means`. Points with one seed contribute nothing to s² but get an interval
from it, which covers the training noise that their own evaluation interval leaves out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trainer.compare import Difference, of_means
from trainer.stats import Interval, t_quantile


@dataclass(frozen=True)
class Pooled:
    """A pooled run-to-run variance: ``variance`` on ``df`` degrees of freedom, from ``cells`` points."""

    variance: float
    df: int
    cells: int

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance)

    def interval(self, values: Sequence[float]) -> Interval:
        """The mean of ``values`` (one point's seeds) with x̄ ± t_df · s/√n."""
        if len(values) == 0:
            return Interval(math.nan, math.nan, math.nan)
        mean = math.fsum(values) / len(values)
        half = t_quantile(self.df) * self.sd / math.sqrt(len(values))
        return Interval(mean, mean - half, mean + half)

    def difference(self, a: Sequence[float], b: Sequence[float]) -> Difference:
        """mean(a) − mean(b) with this variance (:func:`trainer.compare.of_means`)."""
        return of_means(a, b, self.sd, self.df)

    def __str__(self) -> str:
        return f"sd {self.sd:.3f} ({self.df} d.f., {self.cells} point(s) with ≥ 2 seeds)"


def pooled(groups: Iterable[Sequence[float]]) -> Pooled | None:
    """The pooled variance of ``groups`` (each one point's values over its seeds; non-finite values
    are left out); None when no group has two finite values."""
    ss, df, cells = 0.0, 0, 0
    for group in groups:
        values = [float(v) for v in group if math.isfinite(float(v))]
        if len(values) < 2:
            continue
        mean = math.fsum(values) / len(values)
        ss += math.fsum((v - mean) ** 2 for v in values)
        df += len(values) - 1
        cells += 1
    return Pooled(ss / df, df, cells) if df else None
