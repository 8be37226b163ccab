"""Whether A beats B: the interval of the difference A − B, and Holm's correction when many are compared.

Two numbers whose 95 % intervals overlap may still differ: for equal standard errors overlap is a
test at z ≈ 2.77 (0.6 % false separations instead of 5 %, half the power at a real gap). So no
verdict in the project reads overlap; each one is a :class:`Difference`, built one of three ways:

- :func:`paired`: both were scored on the same items (the same validation or test images; the same
  sample targets and starting noise), given as per-item outcomes (:mod:`trainer.items`). The
  per-item differences share the items' own difficulty, so the interval is much tighter than the
  unpaired one when the outcomes are positively correlated (McNemar's idea, for any statistic that
  is a smooth function of per-item means: the objective of accuracy and GAN-test by the delta
  method).
- :func:`unpaired`: independent draws, each with its own interval: se = √(se_A² + se_B²).
- :func:`of_means`: means over training seeds, with a pooled run-to-run variance
  (:class:`trainer.pooled.Pooled`): se = s·√(1/n_A + 1/n_B), Student's t on the pooled degrees of
  freedom. This is the one that counts the training seed's noise.

:func:`versus_best` compares k points with the best of them and corrects for the k − 1 comparisons
(Holm's step-down, which controls the family-wise rate of false separations at 5 %). When the best
was picked from the same numbers it is compared on, the family is every pair, k(k − 1)/2: the
largest of k equal noisy values sits above the others by construction, and testing it against
them as if it had been named in advance separates equal points far more often than 5 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Generic, TypeVar

import numpy as np

from trainer.stats import LEVEL, Interval, t_quantile

K = TypeVar("K", bound=Hashable)
ALPHA = 1 - LEVEL  # a difference is separable when its two-sided p-value, corrected, is below 5 %


@dataclass(frozen=True)
class Difference:
    """A − B with its standard error; ``df`` None means a normal reference (many items)."""

    estimate: float
    se: float
    df: float | None = None
    how: str = ""  # "paired over N items", "unpaired", "means over seeds (pooled sd, d.f.)"

    def interval(self, level: float = LEVEL) -> Interval:
        """The two-sided ``level`` interval of A − B."""
        if not math.isfinite(self.se):
            return Interval(self.estimate, -math.inf, math.inf)
        q = _quantile(self.df, level)
        return Interval(self.estimate, self.estimate - q * self.se, self.estimate + q * self.se)

    @property
    def p_value(self) -> float:
        """Two-sided p-value of A − B = 0 (1 for an unknown or infinite standard error)."""
        if not (math.isfinite(self.estimate) and math.isfinite(self.se)):
            return 1.0
        if self.se == 0:
            return 1.0 if self.estimate == 0 else 0.0
        z = abs(self.estimate) / self.se
        if self.df is None:
            return math.erfc(z / math.sqrt(2))  # 2·(1 − Φ(z)), without SciPy's per-call overhead
        from scipy.stats import t

        return float(2 * t.sf(z, self.df))

    @property
    def p_greater(self) -> float:
        """One-sided p-value of A − B ≤ 0 against A − B > 0 (for a claim in one stated direction)."""
        p = self.p_value / 2
        return p if self.estimate > 0 else 1.0 - p

    def __str__(self) -> str:
        return str(self.interval())


def _quantile(df: float | None, level: float) -> float:
    if df is None:
        from statistics import NormalDist

        return NormalDist().inv_cdf(0.5 + level / 2)
    return t_quantile(df, level)


def _central_gradient(fn: Callable[..., float], at: Sequence[float]) -> list[float]:
    """∂fn/∂xᵢ at ``at`` by central differences (exact for the linear objectives)."""
    out = []
    for i, x in enumerate(at):
        h = max(1e-6, 1e-4 * abs(x))
        up, down = list(at), list(at)
        up[i] += h
        down[i] -= h
        out.append((fn(*up) - fn(*down)) / (2 * h))
    return out


def paired(
    a: Sequence[Sequence[float] | np.ndarray],
    b: Sequence[Sequence[float] | np.ndarray],
    fn: Callable[..., float] | None = None,
) -> Difference:
    """``fn(means of a's parts) − fn(means of b's parts)``, paired item by item within each part.

    ``a[i]`` and ``b[i]`` are part i's per-item outcomes of A and B over the same items in the same
    order (0/1 correctness, or any per-item value); parts are independent of each other (images
    and generated samples). ``fn`` None: one part, the difference of its means. The variance is
    Σᵢ var_j(gᴬᵢ·aᵢⱼ − gᴮᵢ·bᵢⱼ)/nᵢ with gᵢ = ∂fn/∂partᵢ at A's and at B's means: the delta method,
    exact for a weighted mean. Raises ValueError when a part's lengths differ (not the same items).
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired: {len(a)} parts against {len(b)}")
    if fn is None and len(a) != 1:
        raise ValueError("paired: several parts need the function that combines them")
    parts = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(a, b)]
    for i, (x, y) in enumerate(parts):
        if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
            raise ValueError(f"paired: part {i} has {x.shape} against {y.shape} items; pairing needs the same items")
    f = fn or (lambda v: v)
    mean_a, mean_b = [float(x.mean()) for x, _ in parts], [float(y.mean()) for _, y in parts]
    ga, gb = _central_gradient(f, mean_a), _central_gradient(f, mean_b)
    var = sum(float(np.var(ga[i] * x - gb[i] * y, ddof=1)) / len(x) for i, (x, y) in enumerate(parts))
    n = min(len(x) for x, _ in parts)
    return Difference(f(*mean_a) - f(*mean_b), math.sqrt(var), None, f"paired over {n} items")


def unpaired(a: Interval, b: Interval) -> Difference:
    """A − B for independent estimates, each with its own 95 % interval (normal reference)."""
    return Difference(a.value - b.value, math.hypot(a.se, b.se), None, "unpaired")


def of_means(a: Sequence[float], b: Sequence[float], sd: float, df: float) -> Difference:
    """mean(a) − mean(b) for values over training seeds, with the pooled run-to-run ``sd`` on ``df``
    degrees of freedom (:class:`trainer.pooled.Pooled`): se = sd·√(1/n_a + 1/n_b)."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("of_means: each side needs at least one seed")
    se = sd * math.sqrt(1 / len(a) + 1 / len(b))
    how = f"means over {len(a)} and {len(b)} seed(s), pooled sd {sd:.3f} on {df:g} d.f."
    return Difference(float(np.mean(a)) - float(np.mean(b)), se, df, how)


def holm(p_values: Mapping[K, float], alpha: float = ALPHA) -> dict[K, bool]:
    """Holm's step-down: which hypotheses are rejected (separable) at family-wise level ``alpha``.

    Sorted by p-value, the j-th smallest (0-based) is rejected while p ≤ alpha/(m − j), and every
    later one is kept once one fails.
    """
    order = sorted(p_values, key=lambda k: p_values[k])
    out = {k: False for k in p_values}
    m = len(order)
    for j, k in enumerate(order):
        if p_values[k] > alpha / (m - j):
            break
        out[k] = True
    return out


@dataclass(frozen=True)
class VersusBest(Generic[K]):
    """Every other point against the best: A − B = best − other, and whether it is separable."""

    best: K
    differences: dict[K, Difference]
    separable: dict[K, bool]
    family: int  # comparisons Holm corrected for
    picked_here: bool  # the best was picked from the same numbers (family: every pair)

    def not_separable(self) -> list[K]:
        """The others whose difference from the best is not separable, in the given order."""
        return [k for k, sep in self.separable.items() if not sep]


def versus_best(
    values: Mapping[K, float],
    difference: Callable[[K, K], Difference],
    best: K | None = None,
    picked_here: bool = True,
    alpha: float = ALPHA,
) -> VersusBest[K]:
    """Compare the best of ``values`` (largest; or ``best`` when given) with every other key.

    ``difference(a, b)`` builds A − B. ``picked_here``: the best was picked from these same numbers
    (always so when ``best`` is None), so Holm corrects over all k(k − 1)/2 pairs; False: it was
    picked on other data (another draw, other seeds), and the family is the k − 1 comparisons with
    it. Keys whose value is not finite are compared like the others (their difference decides).
    """
    keys = list(values)
    if not keys:
        raise ValueError("versus_best: nothing to compare")
    if best is None:
        finite = [k for k in keys if math.isfinite(values[k])]
        best = max(finite or keys, key=lambda k: values[k])
        picked_here = True
    others = [k for k in keys if k != best]
    diffs = {k: difference(best, k) for k in others}
    if picked_here:
        pairs = {(i, j): difference(i, j) for i, j in combinations(keys, 2) if best not in (i, j)}
        family = {**{(best, k): d.p_value for k, d in diffs.items()}, **{p: d.p_value for p, d in pairs.items()}}
        rejected = holm(family, alpha)
        separable = {k: rejected[(best, k)] for k in others}
    else:
        family = {k: d.p_value for k, d in diffs.items()}
        separable = holm(family, alpha)
    return VersusBest(best, diffs, separable, len(family), picked_here)
