"""trainer.compare, trainer.pooled, trainer.items: the difference test by simulation (false
separations at equal means, power at a real gap), Holm and the pooled variance by hand, and the
per-item outcomes' round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from trainer import compare, items, stats
from trainer.compare import Difference
from trainer.pooled import pooled
from trainer.stats import Interval

REPS = 4000  # a rate's s.e. at 5 % is 0.0034: the ±1.5 % bounds below are over 4 s.e.


def _correlated_items(rng: np.random.Generator, n: int, p_a: float, p_b: float, noise: float) -> tuple:
    """0/1 outcomes of A and B on the same n items: item i has a difficulty zᵢ ~ N(0, 1) that both
    see, plus each its own N(0, noise²); P(A right) = p_a, P(B right) = p_b. Smaller noise, more
    positive correlation."""
    z = rng.normal(size=n)
    scale = math.sqrt(1 + noise**2)
    a = z + rng.normal(scale=noise, size=n) > norm.ppf(1 - p_a) * scale
    b = z + rng.normal(scale=noise, size=n) > norm.ppf(1 - p_b) * scale
    return a, b


def test_paired_difference_at_equal_means_separates_5_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(REPS):
        a, b = _correlated_items(rng, 500, 0.7, 0.7, noise=0.8)
        hits += compare.paired([a], [b]).p_value < 0.05
    assert abs(hits / REPS - 0.05) <= 0.015, hits / REPS


def test_unpaired_difference_of_two_wilson_intervals_separates_5_percent_at_equal_means() -> None:
    rng = np.random.default_rng(1)
    ka, kb = rng.binomial(400, 0.6, REPS), rng.binomial(400, 0.6, REPS)
    hits = sum(compare.unpaired(stats.wilson(x, 400), stats.wilson(y, 400)).p_value < 0.05 for x, y in zip(ka, kb))
    assert abs(hits / REPS - 0.05) <= 0.015, hits / REPS


def test_paired_test_has_the_power_overlap_lacks_at_a_gap_of_2_8_standard_errors() -> None:
    # Each estimate's s.e. is √(p(1−p)/n); the gap is 2.8 of them. Positively correlated items.
    rng = np.random.default_rng(2)
    n, p = 1000, 0.72
    gap = 2.8 * math.sqrt(p * (1 - p) / n)
    paired_hits = overlap_hits = 0
    for _ in range(1000):
        a, b = _correlated_items(rng, n, p, p - gap, noise=0.8)
        paired_hits += compare.paired([a], [b]).p_value < 0.05
        ia, ib = stats.wilson(a.sum(), n), stats.wilson(b.sum(), n)
        overlap_hits += ia.lo > ib.hi or ib.lo > ia.hi
    assert paired_hits / 1000 >= 0.70, paired_hits / 1000
    assert overlap_hits / 1000 <= 0.30, overlap_hits / 1000  # what the overlap rule gave up


def test_paired_objective_difference_is_the_weighted_per_item_difference_by_hand() -> None:
    rng = np.random.default_rng(3)
    acc_a, acc_b = rng.random(144) < 0.9, rng.random(144) < 0.85
    gan_a, gan_b = rng.random(128) < 0.6, rng.random(128) < 0.7
    w = 0.5
    d = compare.paired([acc_a, gan_a], [acc_b, gan_b], lambda acc, gan: w * acc + (1 - w) * gan)
    da, dg = acc_a.astype(float) - acc_b, gan_a.astype(float) - gan_b
    assert d.estimate == pytest.approx(w * da.mean() + (1 - w) * dg.mean(), abs=1e-12)
    se = math.sqrt(w**2 * da.var(ddof=1) / 144 + (1 - w) ** 2 * dg.var(ddof=1) / 128)
    assert d.se == pytest.approx(se, rel=1e-6)
    with pytest.raises(ValueError, match="same items"):
        compare.paired([acc_a], [acc_b[:-1]])


def test_harmonic_objective_difference_by_the_delta_method_by_hand() -> None:
    rng = np.random.default_rng(4)
    a = [rng.random(200) < 0.8, rng.random(300) < 0.5]
    b = [rng.random(200) < 0.75, rng.random(300) < 0.55]
    h = lambda acc, gan: 2 * acc * gan / (acc + gan)  # noqa: E731
    d = compare.paired(a, b, h)
    ma, mb = [x.mean() for x in a], [x.mean() for x in b]
    # ∂H/∂acc = 2g²/(a+g)², ∂H/∂gan = 2a²/(a+g)²
    grad = lambda acc, gan: (2 * gan**2 / (acc + gan) ** 2, 2 * acc**2 / (acc + gan) ** 2)  # noqa: E731
    ga, gb = grad(*ma), grad(*mb)
    var = sum(np.var(ga[i] * a[i] - gb[i] * b[i], ddof=1) / len(a[i]) for i in range(2))
    assert d.estimate == pytest.approx(h(*ma) - h(*mb), abs=1e-12)
    assert d.se == pytest.approx(math.sqrt(var), rel=1e-5)


def test_holm_by_hand() -> None:
    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 in order of p.
    p = {"a": 0.01, "b": 0.04, "c": 0.016, "d": 0.03}
    assert compare.holm(p) == {"a": True, "c": True, "b": False, "d": False}  # d: 0.03 > 0.025 stops it
    assert compare.holm({"x": 0.049}) == {"x": True}
    assert compare.holm({"x": 0.051}) == {"x": False}


def _family_rate(rng: np.random.Generator, k: int, picked_here: bool, reps: int = REPS) -> float:
    """Share of replications in which ``versus_best`` calls any of k equal points separable from the
    best: each point an estimate with s.e. 1 (unpaired); the best picked from these numbers, or
    named in advance (the first point, as when selection used another draw)."""
    hits = 0
    for _ in range(reps):
        values = dict(enumerate(rng.normal(size=k)))
        ivs = {i: Interval(v, v - stats.Z95, v + stats.Z95) for i, v in values.items()}
        result = compare.versus_best(values, lambda i, j: compare.unpaired(ivs[i], ivs[j]),
                                     best=None if picked_here else 0, picked_here=picked_here)
        hits += any(result.separable.values())
    return hits / reps


def test_five_finalists_at_equal_means_are_separated_at_most_5_percent_of_the_time() -> None:
    rng = np.random.default_rng(5)
    picked_here = _family_rate(rng, 5, picked_here=True)
    named = _family_rate(rng, 5, picked_here=False)
    assert picked_here <= 0.05 + 0.015, picked_here
    assert abs(named - 0.05) <= 0.015 or named < 0.05, named
    # Why the family is every pair when the best is picked from the same numbers: correcting for
    # the k − 1 comparisons alone then separates equal points about twice as often as 5 %.
    hits = 0
    for _ in range(REPS):
        values = rng.normal(size=5)
        best = int(np.argmax(values))
        p = {j: Difference(values[best] - values[j], math.sqrt(2)).p_value for j in range(5) if j != best}
        hits += any(compare.holm(p).values())
    assert hits / REPS > 0.07, hits / REPS


def test_pairs_at_equal_means_with_the_best_picked_here() -> None:
    assert abs(_family_rate(np.random.default_rng(6), 2, picked_here=True) - 0.05) <= 0.015


def test_means_over_seeds_with_a_pooled_variance_separate_5_percent_at_equal_means() -> None:
    rng = np.random.default_rng(7)
    hits = covered = 0
    for _ in range(REPS):
        cells = rng.normal(0.8, 0.05, size=(6, 2))  # six points, two seeds each: 6 d.f.
        pool = pooled(cells.tolist())
        assert pool is not None and pool.df == 6
        hits += pool.difference(cells[0], cells[1]).p_value < 0.05
        iv = pool.interval(cells[2])
        covered += iv.lo <= 0.8 <= iv.hi
    assert abs(hits / REPS - 0.05) <= 0.015, hits / REPS
    assert abs(covered / REPS - 0.95) <= 0.015, covered / REPS


def test_pooled_variance_by_hand() -> None:
    groups = [[0.80, 0.70], [0.50, 0.60, 0.70], [0.9], [float("nan"), 0.4]]
    pool = pooled(groups)
    # cell 1: 0.005 on 1 d.f.; cell 2: 0.02 on 2 d.f.; the others have < 2 finite values
    assert pool is not None and pool.df == 3 and pool.cells == 2
    assert pool.variance == pytest.approx((0.005 + 0.02) / 3)
    iv = pool.interval([0.8, 0.7])
    half = stats.t_quantile(3) * math.sqrt(0.025 / 3) / math.sqrt(2)
    assert (iv.value, iv.lo, iv.hi) == pytest.approx((0.75, 0.75 - half, 0.75 + half))
    assert pooled([[0.5], [0.7]]) is None
    d = pool.difference([0.8, 0.7], [0.5])
    assert d.estimate == pytest.approx(0.25) and d.se == pytest.approx(pool.sd * math.sqrt(1.5)) and d.df == 3


def test_difference_p_value_and_interval_agree() -> None:
    d = Difference(0.049, 0.0194)  # the review's quickstart pair: 0.049 [0.011, 0.087]
    iv = d.interval()
    assert (iv.lo, iv.hi) == pytest.approx((0.011, 0.087), abs=1e-3)
    assert d.p_value < 0.05
    assert Difference(0.0, 0.0).p_value == 1.0 and Difference(0.1, 0.0).p_value == 0.0
    assert Difference(0.1, math.inf).p_value == 1.0
    t = Difference(0.1, 0.05, df=3)
    assert t.interval().hi == pytest.approx(0.1 + stats.t_quantile(3) * 0.05)


@pytest.mark.parametrize("n", [1, 7, 8, 144, 10_000])
def test_items_round_trip(n: int) -> None:
    bits = np.random.default_rng(n).random(n) < 0.8
    text = items.encode(bits)
    assert text.startswith(f"{n}:")
    assert (items.decode(text) == bits).all()
    if n == 10_000:
        assert len(text) < 2_000  # fits an MLflow tag (8,000 characters)
    with pytest.raises(ValueError, match="not per-item"):
        items.decode("12:not base64!")
