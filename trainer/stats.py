"""Interval estimates for every number a sweep ranks by or reports, in one place.

- :func:`wilson`: a fraction over n independent items (accuracy over a split's images, GAN-test
  over its samples). The Wilson score interval keeps its coverage near 0 and 1, where
  p ± z·√(p(1−p)/n) collapses to a point.
- :func:`mean_interval`: the mean of n per-item values (sample log-likelihood, score alignment):
  mean ± z·sd/√n.
- :func:`seeds_interval`: the mean over a few training seeds, with Student's t (n − 1 degrees of
  freedom): the spread between seeds, not within one run.
- :func:`combine`: a smooth function of independent parts (the objective from accuracy and
  GAN-test): first-order (delta-method) error propagation, exact for a weighted mean.

Whether two numbers differ is not read from whether their intervals overlap (that is a test at
z ≈ 2.77 for equal standard errors): :mod:`trainer.compare` tests the difference itself.

Pure Python (no NumPy, no torch; SciPy's t quantiles, imported when first needed), so the
trainer, the sweep and the analysis share it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Sequence

LEVEL = 0.95  # every interval the project reports is a 95 % interval
Z95 = NormalDist().inv_cdf(0.5 + LEVEL / 2)  # 1.959963984540054



@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % interval, ``lo ≤ value ≤ hi``."""

    value: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def se(self) -> float:
        """The standard error a symmetric normal interval of this width would have."""
        return self.half_width / Z95

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


@functools.lru_cache(maxsize=1024)  # called per interval in loops; the answer depends on df alone
def t_quantile(df: float, level: float = LEVEL) -> float:
    """Student's t two-sided ``level`` quantile (the upper (1 + level)/2 point) for ``df`` > 0."""
    if not df > 0:
        raise ValueError(f"t_quantile: df must be > 0, got {df}")
    from scipy.stats import t  # SciPy comes with scikit-learn; loaded only where a t interval is made

    return float(t.ppf(0.5 + level / 2, df))


def wilson(successes: float, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of the fraction ``successes / n``; the value is that fraction.

    ``successes`` may be given as a float (a fraction times n, rounded where it came from).
    n = 0 gives the whole range [0, 1] around NaN.
    """
    if n <= 0:
        return Interval(math.nan, 0.0, 1.0)
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # rounding can put p a hair outside [centre ± half] at p = 0 or 1
    return Interval(p, min(max(centre - half, 0.0), p), max(min(centre + half, 1.0), p))


def proportion(p: float, n: int) -> Interval:
    """:func:`wilson` for a fraction ``p`` already divided by its ``n`` items."""
    return wilson(round(p * n), n) if n > 0 else wilson(0, 0)


def mean_interval(values: Sequence[float], z: float = Z95) -> Interval:
    """The mean of per-item values with mean ± z·sd/√n (sd with n − 1); needs n ≥ 2 for a width."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, -math.inf, math.inf)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half)


def seeds_interval(values: Sequence[float]) -> Interval:
    """The mean over training seeds with Student's t interval (n − 1 degrees of freedom).

    One seed has no spread to measure: its interval is unbounded, so it never separates.
    """
    n = len(values)
    if n < 2:
        return mean_interval(values)
    return mean_interval(values, z=t_quantile(n - 1))


def combine(fn: Callable[..., float], parts: Sequence[Interval], bounds: tuple[float, float] | None = None) -> Interval:
    """The interval of ``fn(*values)`` for independent ``parts``, by first-order propagation.

    The variance is Σ (∂fn/∂xᵢ · seᵢ)², with each part's standard error read from its interval's
    width (:attr:`Interval.se`, so a Wilson part at p = 0 still contributes) and the partial
    derivatives by central differences. For a weighted mean this is exact; for a curved function
    (the harmonic mean) it is the delta method. ``bounds`` clips the interval to the function's
    range.
    """
    values = [p.value for p in parts]
    value = fn(*values)
    if not all(math.isfinite(v) for v in values):
        return Interval(value, math.nan, math.nan)
    var = 0.0
    for i, part in enumerate(parts):
        se = part.se
        if se == 0:
            continue
        if not math.isfinite(se):
            return Interval(value, -math.inf, math.inf)
        h = max(1e-6, 1e-4 * abs(values[i]))
        up, down = list(values), list(values)
        up[i] += h
        down[i] -= h
        slope = (fn(*up) - fn(*down)) / (2 * h)
        var += (slope * se) ** 2
    half = Z95 * math.sqrt(var)
    lo, hi = value - half, value + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(value, min(lo, value), max(hi, value))

