"""trainer.stats: coverage of each interval by simulation, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer import stats
from trainer.stats import Interval


@pytest.mark.parametrize("n", [128, 1024])
@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.95])
def test_wilson_covers_95_percent_of_binomial_draws(p: float, n: int) -> None:
    draws = 40_000  # coverage estimate's s.e. ≈ 0.0011
    k = np.random.default_rng(int(p * 1000) + n).binomial(n, p, size=draws)
    covered = 0
    for successes, count in zip(*np.unique(k, return_counts=True)):
        iv = stats.wilson(int(successes), n)
        covered += count * (iv.lo <= p <= iv.hi)
    assert abs(covered / draws - 0.95) <= 0.015, f"coverage {covered / draws:.4f} at p={p}, n={n}"


def test_wilson_matches_the_score_interval_formula_by_hand() -> None:
    # p = 77/128: centre (p + z²/2n)/(1 + z²/n), half-width z·√(p(1−p)/n + z²/4n²)/(1 + z²/n)
    z, n, p = 1.959963984540054, 128, 77 / 128
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    iv = stats.wilson(77, 128)
    assert iv.value == pytest.approx(p)
    assert iv.lo == pytest.approx(centre - half, abs=1e-12) and iv.hi == pytest.approx(centre + half, abs=1e-12)
    assert (iv.lo, iv.hi) == pytest.approx((0.5150, 0.6821), abs=5e-4)  # s.e. 0.043, as for p ≈ 0.6


def test_wilson_keeps_a_width_at_zero_and_one() -> None:
    zero, one = stats.wilson(0, 128), stats.wilson(128, 128)
    assert zero.lo == 0.0 and zero.value == 0.0 and zero.hi == pytest.approx(0.0292, abs=1e-4)
    assert one.hi == 1.0 and one.value == 1.0 and one.lo == pytest.approx(1 - 0.0292, abs=1e-4)
    assert stats.proportion(0.6015625, 128) == stats.wilson(77, 128)
    nothing = stats.wilson(0, 0)
    assert math.isnan(nothing.value) and (nothing.lo, nothing.hi) == (0.0, 1.0)


def test_t_quantile_against_numerical_integration_of_the_density() -> None:
    for df in (1, 2, 3.5, 4, 9, 29, 30, 31, 60, 200):
        q = stats.t_quantile(df)
        x = np.linspace(0.0, q, 400_001)
        log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        density = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
        mass = np.trapezoid(density, x)  # P(0 < T < q), which is 0.475 at the 97.5 % point
        assert mass == pytest.approx(0.475, abs=2e-6), df
    with pytest.raises(ValueError):
        stats.t_quantile(0)


@pytest.mark.parametrize("n", [3, 5, 30])
def test_seeds_interval_covers_the_mean_of_normal_draws(n: int) -> None:
    rng = np.random.default_rng(n)
    draws = rng.normal(0.7, 0.05, size=(20_000, n))
    covered = sum(stats.seeds_interval(list(row)).lo <= 0.7 <= stats.seeds_interval(list(row)).hi for row in draws)
    assert abs(covered / len(draws) - 0.95) <= 0.015


def test_mean_interval_covers_for_many_items_and_one_seed_never_separates() -> None:
    rng = np.random.default_rng(7)
    draws = rng.exponential(2.0, size=(4_000, 500))  # skewed items: the CLT still holds at n = 500
    covered = 0
    for row in draws:
        iv = stats.mean_interval(list(row))
        covered += iv.lo <= 2.0 <= iv.hi
    assert abs(covered / len(draws) - 0.95) <= 0.015
    one = stats.seeds_interval([0.8])  # one seed has no spread to measure: unbounded
    assert one.value == 0.8 and (one.lo, one.hi) == (-math.inf, math.inf)
    assert math.isnan(stats.mean_interval([]).value)


def test_weighted_objective_interval_is_exact_for_independent_parts() -> None:
    acc, gan = Interval(0.9, 0.86, 0.94), Interval(0.6, 0.5, 0.7)  # symmetric: se = half-width / z
    w = 0.5
    iv = stats.combine(lambda a, g: w * a + (1 - w) * g, [acc, gan])
    se = math.sqrt((w * 0.04 / stats.Z95) ** 2 + ((1 - w) * 0.1 / stats.Z95) ** 2)
    assert iv.value == pytest.approx(0.75)
    assert iv.lo == pytest.approx(0.75 - stats.Z95 * se, abs=1e-9)
    assert iv.hi == pytest.approx(0.75 + stats.Z95 * se, abs=1e-9)


def test_harmonic_objective_interval_by_the_delta_method() -> None:
    acc, gan = Interval(0.8, 0.76, 0.84), Interval(0.5, 0.4, 0.6)
    iv = stats.combine(lambda a, g: 2 * a * g / (a + g), [acc, gan], bounds=(0.0, 1.0))
    # ∂H/∂a = 2g²/(a+g)², ∂H/∂g = 2a²/(a+g)², by hand at a = 0.8, g = 0.5
    da, dg = 2 * 0.25 / 1.69, 2 * 0.64 / 1.69
    se = math.sqrt((da * 0.04 / stats.Z95) ** 2 + (dg * 0.1 / stats.Z95) ** 2)
    assert iv.value == pytest.approx(0.8 / 1.3)
    assert iv.half_width == pytest.approx(stats.Z95 * se, rel=1e-6)


def test_combine_coverage_of_a_weighted_objective_of_two_binomials() -> None:
    rng = np.random.default_rng(3)
    pa, pg, na, ng, w = 0.9, 0.6, 180, 1024, 0.5
    truth = w * pa + (1 - w) * pg
    ka, kg = rng.binomial(na, pa, 20_000), rng.binomial(ng, pg, 20_000)
    covered = 0
    for a, g in zip(ka, kg):
        iv = stats.combine(lambda x, y: w * x + (1 - w) * y, [stats.wilson(a, na), stats.wilson(g, ng)], (0.0, 1.0))
        covered += iv.lo <= truth <= iv.hi
    assert abs(covered / 20_000 - 0.95) <= 0.015


def test_interval_prints_three_decimals_with_trailing_zeros() -> None:
    assert str(Interval(0.80, 0.76, 0.83)) == "0.800 [0.760, 0.830]"
