"""The hypervolume of a two-metric front: the area it dominates above a reference point.

Both metrics are maximized (a minimized metric is negated first, as in :mod:`analysis.pareto`).
A point ``p`` dominates the box ``[r_x, p_x] × [r_y, p_y]`` above the reference point ``r``; the
hypervolume of a set of points is the area of the union of their boxes. It grows when any point
of the front moves outwards, so one number compares two sweeps' fronts, provided both use the
same reference point. For accuracy and GAN-test (fractions in [0, 1]) the analysis's reference
point is (0, 0) and the hypervolume is a fraction of the unit square: 1 would be a model with
100 % accuracy and 100 % GAN-test.

Why (0, 0) and not chance, (1/K, 1/K) for K classes: it is the reference of every hypervolume
already logged on sweeps' parent runs (``pareto/hypervolume``), so fronts of earlier and later
sweeps stay comparable, and it needs no K (the frame of several sweeps may mix datasets). Its cost:
a model at chance on one metric still earns area from the other. Where a number judges a search
against a grid on one dataset (the replay benchmark, :mod:`sweep.bench.replay.searches`), the reference is
:func:`chance_reference`, under which only better-than-chance models count; the CLI takes it as
``--reference 0.1 0.1`` (K = 10).

Optuna computes hypervolumes too, but only in a private module (``optuna._hypervolume``) whose
name and signature may change with any release; in two dimensions the exact computation is a
sort and one sweep (:func:`hypervolume_2d`), checked in the tests against inclusion–exclusion
and grid counting.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from analysis import verdicts
from analysis.pareto import default_minimize, front_axes, point_front
from analysis.runs import LOWER_IS_BETTER, PERCENT, AnalysisError, column_name
from trainer.stats import LEVEL, Z95, Interval

DEFAULT_REFERENCE = (0.0, 0.0)  # fractions in [0, 1], both maximized: the worst possible point


def chance_reference(num_classes: int) -> tuple[float, float]:
    """(1/K, 1/K): accuracy and GAN-test of guessing among ``num_classes`` classes."""
    if num_classes < 2:
        raise ValueError(f"chance needs at least 2 classes, not {num_classes}")
    return 1.0 / num_classes, 1.0 / num_classes


def hypervolume_2d(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                   reference: tuple[float, float] = DEFAULT_REFERENCE) -> float:
    """Area dominated by the points ``(x[i], y[i])`` above ``reference``, both maximized.

    Points not strictly better than the reference on both metrics add nothing. Sorted by x
    descending, each point adds the strip between the highest y seen so far and its own y,
    ``x - r_x`` wide. O(n log n); any point set (dominated points, ties, duplicates) is fine.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, not {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("hypervolume of non-finite points")
    rx, ry = map(float, reference)
    keep = (x > rx) & (y > ry)
    x, y = x[keep], y[keep]
    area, top = 0.0, ry
    for i in np.lexsort((-y, -x)):  # x descending, then y descending
        if y[i] > top:
            area += (x[i] - rx) * (y[i] - top)
            top = y[i]
    return area


def front_hypervolume(frame: pd.DataFrame, x: str | None = None, y: str = "gan_test",
                      reference: tuple[float, float] | None = None, include_stopped: bool = False,
                      minimize: Collection[str] | None = None) -> float:
    """Hypervolume of the Pareto front of ``frame``'s points on ``x`` and ``y`` (a point's seeds
    averaged, as the front is drawn and exported: :func:`analysis.pareto.point_front`).

    The reference point is in the metrics' own units (fractions, not percent); a minimized
    metric's reference is an upper bound. ``None`` means (0, 0), which only makes sense for
    maximized metrics, so a minimized metric needs an explicit reference. Candidates are those of
    :func:`analysis.pareto.pareto_front`; ``x=None`` is the accuracy the trials selected by, and
    the axes are checked as for the front (:func:`analysis.pareto.front_axes`).
    """
    xc, yc = front_axes(frame, x, y)
    minimize = default_minimize(xc, yc) if minimize is None else minimize
    minimized = {column_name(m) for m in minimize}
    if reference is None:
        if minimized:
            raise AnalysisError(f"the hypervolume of a minimized metric ({', '.join(sorted(minimized))}) "
                                "needs an explicit reference point (--reference X Y)")
        reference = DEFAULT_REFERENCE
    front = point_front(frame, xc, yc, include_stopped=include_stopped, minimize=minimize)
    sx, sy = (-1.0 if c in minimized else 1.0 for c in (xc, yc))
    return hypervolume_2d(sx * front[xc].to_numpy(float), sy * front[yc].to_numpy(float),
                          (sx * reference[0], sy * reference[1]))


BOOTSTRAP_DRAWS = 2000  # draws of the parametric bootstrap; its percentiles move by < 0.002 at this size


def front_hypervolume_interval(frame: pd.DataFrame, x: str | None = None, y: str = "gan_test",
                               reference: tuple[float, float] | None = None, include_stopped: bool = False,
                               minimize: Collection[str] | None = None, draws: int = BOOTSTRAP_DRAWS,
                               seed: int = 0) -> Interval:
    """:func:`front_hypervolume` with a 95 % interval from a parametric bootstrap over the points'
    noise: each point's two numbers are drawn from normals with the standard errors of their logged
    intervals (the pooled run-to-run variance where points have several seeds, the evaluation's
    otherwise; fractions kept in [0, 1]) and the hypervolume of every point recomputed per draw (a
    dominated point may move onto the front). The hypervolume of noisy points is biased upwards (it
    is a best of many), and the draws add that bias again, so the interval is the basic bootstrap
    one, 2·ĥ − the draws' 97.5 and 2.5 percentiles, which carries the bias back instead of doubling
    it. A point without a finite interval keeps its value in every draw.
    """
    value = front_hypervolume(frame, x, y, reference, include_stopped, minimize)
    xc, yc = front_axes(frame, x, y)
    minimize = default_minimize(xc, yc) if minimize is None else minimize
    minimized = {column_name(m) for m in minimize}
    ref = DEFAULT_REFERENCE if reference is None else reference
    points = verdicts.point_means(frame, [xc, yc], include_stopped)
    points = points[points[xc].notna() & points[yc].notna()]
    rng = np.random.default_rng(seed)
    samples = []
    for column in (xc, yc):
        mean = points[column].to_numpy(float)
        se = ((points[f"{column}_hi"] - points[f"{column}_lo"]).to_numpy(float) / (2 * Z95))
        se = np.where(np.isfinite(se), se, 0.0)
        drawn = mean + rng.standard_normal((draws, len(mean))) * se
        if column in PERCENT or column in verdicts.FRACTIONS:
            drawn = np.clip(drawn, 0.0, 1.0)
        samples.append(drawn)
    sx, sy = (-1.0 if c in minimized else 1.0 for c in (xc, yc))
    volumes = [hypervolume_2d(sx * a, sy * b, (sx * ref[0], sy * ref[1])) for a, b in zip(*samples)]
    q_lo, q_hi = np.percentile(volumes, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    lo, hi = max(2 * value - float(q_hi), 0.0), 2 * value - float(q_lo)
    return Interval(value, min(lo, value), max(hi, value))


def describe_reference(x: str, y: str, reference: tuple[float, float] | None) -> str:
    """``test_acc=0, gan_test=0``: the reference point as printed beside a hypervolume."""
    ref = DEFAULT_REFERENCE if reference is None else reference
    return ", ".join(f"{column_name(m)}={v:g}" + (" (upper bound)" if column_name(m) in LOWER_IS_BETTER else "")
                     for m, v in zip((x, y), ref))
