"""Hypervolume of 2-D fronts against two brute-force references on random point sets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.hypervolume import front_hypervolume, hypervolume_2d
from analysis.runs import AnalysisError


def inclusion_exclusion(x: np.ndarray, y: np.ndarray, ref: tuple[float, float]) -> float:
    """Area of the union of the boxes [ref, p_i]: the sum over non-empty subsets S of
    (-1)^(|S|+1) · area(∩ S), where the intersection of boxes anchored at ref is the box at the
    coordinate-wise minimum. Exponential: only for small n."""
    total = 0.0
    for k in range(1, len(x) + 1):
        for subset in itertools.combinations(range(len(x)), k):
            w = min(x[i] for i in subset) - ref[0]
            h = min(y[i] for i in subset) - ref[1]
            total += (-1) ** (k + 1) * max(w, 0.0) * max(h, 0.0)
    return total


def grid_count(x: np.ndarray, y: np.ndarray, ref: tuple[int, int], size: int) -> int:
    """Unit cells [a, a+1] × [b, b+1] above ref that some integer point dominates, counted one by one."""
    cells = 0
    for a in range(ref[0], size):
        for b in range(ref[1], size):
            if any(px >= a + 1 and py >= b + 1 for px, py in zip(x, y)):
                cells += 1
    return cells


@pytest.mark.parametrize("seed", range(30))
def test_hypervolume_equals_inclusion_exclusion(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    x, y = rng.random(n), rng.random(n)
    ref = (float(rng.uniform(-0.2, 0.4)), float(rng.uniform(-0.2, 0.4)))  # some points below it
    assert hypervolume_2d(x, y, ref) == pytest.approx(inclusion_exclusion(x, y, ref), abs=1e-12)


@pytest.mark.parametrize("seed", range(30))
def test_hypervolume_equals_grid_counting_with_ties_and_duplicates(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 30))
    x, y = rng.integers(0, 8, n), rng.integers(0, 8, n)  # few values: ties and exact duplicates
    ref = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    assert hypervolume_2d(x, y, ref) == grid_count(x, y, ref, 8)


def test_hypervolume_of_known_fronts():
    assert hypervolume_2d([], []) == 0.0
    assert hypervolume_2d([0.5], [0.4]) == pytest.approx(0.2)
    # Staircase (1, 0.2), (0.5, 0.6): 1·0.2 + 0.5·0.4; a dominated point adds nothing.
    assert hypervolume_2d([1.0, 0.5, 0.4], [0.2, 0.6, 0.1]) == pytest.approx(0.4)
    assert hypervolume_2d([1.0], [1.0], reference=(0.5, 0.0)) == pytest.approx(0.5)
    assert hypervolume_2d([0.1], [0.9], reference=(0.2, 0.0)) == 0.0  # not better than the reference


def frame(x, y, status=None, fisher=None) -> pd.DataFrame:
    n = len(x)
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)], "run_name": [f"sm s{i}" for i in range(n)], "loss": "score_matching",
        "status": status or ["finished"] * n, "epochs": pd.array([2] * n, dtype="Int64"),
        "epochs_done": pd.array([2] * n, dtype="Int64"), "test_acc": np.asarray(x, float),
        "gan_test": np.asarray(y, float), "fisher_divergence": np.asarray(fisher if fisher else y, float),
    })


def test_front_hypervolume_uses_the_front_of_finished_trials():
    trials = frame([1.0, 0.5, 0.9], [0.2, 0.6, 0.9], status=["finished", "finished", "diverged"])
    assert front_hypervolume(trials) == pytest.approx(0.4)  # the diverged (0.9, 0.9) is not a candidate
    assert front_hypervolume(trials, reference=(0.5, 0.0)) == pytest.approx(0.1)


def test_minimized_metric_needs_a_reference_and_is_measured_below_it():
    trials = frame([1.0, 0.5], [0.0, 0.0], fisher=[0.8, 0.2])
    with pytest.raises(AnalysisError, match="explicit reference"):
        front_hypervolume(trials, "test_acc", "fisher_divergence")
    # Negated: points (1, -0.8) and (0.5, -0.2) against (0, -1): 1·0.2 + 0.5·0.6.
    assert front_hypervolume(trials, "test_acc", "fisher_divergence", reference=(0.0, 1.0)) == pytest.approx(0.5)


def test_chance_reference_counts_only_better_than_chance():
    from analysis.hypervolume import chance_reference, hypervolume_2d

    ref = chance_reference(10)
    assert ref == (0.1, 0.1)
    # One point at (0.6, 0.5): the box above chance is 0.5 × 0.4; a point at chance adds nothing.
    assert hypervolume_2d([0.6, 0.1], [0.5, 0.9], ref) == pytest.approx(0.5 * 0.4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        chance_reference(1)
