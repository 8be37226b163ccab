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
- :meth:`Interval.overlaps`: two numbers whose intervals overlap are *not separable*; a report
  never ranks them.

Pure Python (no NumPy, no torch), so the trainer, the sweep and the analysis share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Sequence

LEVEL = 0.95  # every interval the project reports is a 95 % interval
Z95 = NormalDist().inv_cdf(0.5 + LEVEL / 2)  # 1.959963984540054

# Student's t, upper 97.5 % point, for 1..30 degrees of freedom (two-sided 95 %).
_T975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
    2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
    2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
    2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
    2.045229642, 2.042272456,
)  # fmt: skip


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

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point: then the two values are not separable."""
        return self.lo <= other.hi and other.lo <= self.hi

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def t_quantile(df: int) -> float:
    """Student's t upper 97.5 % point for ``df`` ≥ 1 degrees of freedom.

    Tabled to 1e-9 up to 30; beyond, the Cornish–Fisher expansion around the normal quantile
    (error below 1e-6 at df > 30).
    """
    if df < 1:
        raise ValueError(f"t_quantile: df must be ≥ 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


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


def not_separable_from(best: Interval, others: dict[str, Interval]) -> list[str]:
    """The names in ``others`` whose interval overlaps ``best``'s (in the given order)."""
    return [name for name, iv in others.items() if iv.overlaps(best)]
