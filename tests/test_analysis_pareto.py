"""Pareto fronts against a brute-force O(n²) reference, ties and duplicates included."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import assert_png

from analysis.pareto import _overlap, front_mask, pareto_front, place_labels, write_pareto
from analysis.runs import AnalysisError


def brute_force_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Point i is on the front unless some j is >= in both and > in one (both maximized)."""
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        for j in range(len(x)):
            if x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]):
                keep[i] = False
    return keep


def trials(x, y, status=None) -> pd.DataFrame:
    n = len(x)
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)], "run_name": [f"sm s{i}" for i in range(n)],
        "loss": "score_matching", "lam": 1e-3, "mu": 1e-4, "seed": range(n),
        "status": status or ["finished"] * n, "epochs": pd.array([2] * n, dtype="Int64"),
        "epochs_done": pd.array([2] * n, dtype="Int64"), "test_acc": np.asarray(x, float),
        "gan_test": np.asarray(y, float), "fisher_divergence": np.asarray(y, float),
        "checkpoint_uri": [f"file:///c/{i}/best.pt" for i in range(n)],
    })


@pytest.mark.parametrize("seed", range(40))
def test_front_equals_brute_force_with_ties_and_duplicates(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # Few distinct integer values force ties in x, in y, and exact duplicates.
    x, y = rng.integers(0, 5, n), rng.integers(0, 5, n)
    expected = brute_force_front(x, y)
    np.testing.assert_array_equal(front_mask(x, y), expected)
    front = pareto_front(trials(x, y))
    assert set(front["run_id"]) == {f"r{i}" for i in np.flatnonzero(expected)}
    # Minimizing y is maximizing -y.
    front = pareto_front(trials(x, y), "test_acc", "fisher_divergence", minimize=["fisher_divergence"])
    assert set(front["run_id"]) == {f"r{i}" for i in np.flatnonzero(brute_force_front(x, -y))}


def test_duplicates_stay_and_ties_are_dominated():
    # (3,3) twice: both stay; (3,1) ties on x and loses on y; (1,3) ties on y and loses on x.
    front = pareto_front(trials([3, 3, 3, 1, 4], [3, 3, 1, 3, 0]))
    assert front["run_id"].tolist() == ["r4", "r0", "r1"]  # best test_acc first


def test_stopped_and_diverged_trials_are_left_out_unless_asked():
    frame = trials([9, 1, 8, 2], [9, 1, 1, 2], status=["stopped", "finished", "diverged", "finished"])
    frame.loc[1, "epochs_done"] = 1  # finished but cut short: counts as stopped early
    assert pareto_front(frame)["run_id"].tolist() == ["r3"]
    assert pareto_front(frame, include_stopped=True)["run_id"].tolist() == ["r0"]
    with pytest.raises(AnalysisError, match="no finished trial has both"):
        pareto_front(frame[frame["status"] != "finished"])


def test_unknown_or_unlogged_metric_is_an_error():
    frame = trials([1, 2], [2, 1])
    with pytest.raises(AnalysisError, match="unknown metric 'accuracy'"):
        pareto_front(frame, x="accuracy")
    frame["score_alignment"] = np.nan
    with pytest.raises(AnalysisError, match="not logged"):
        pareto_front(frame, y="eval/score_alignment")  # MLflow keys are accepted too


def test_write_pareto_exports_front_and_plot(tmp_path):
    frame = trials([0.5, 0.7, 0.6, 0.2], [0.9, 0.1, 0.5, 0.2])
    paths = write_pareto(frame, tmp_path)
    assert sorted(paths) == ["front.csv", "front.parquet", "pareto.png"]
    front = pd.read_parquet(paths["front.parquet"])
    on = front[front["on_front"]]
    assert on["run_id"].tolist() == ["r1", "r2", "r0"]
    assert {"lam", "mu", "test_acc", "gan_test", "checkpoint_uri", "candidate"} <= set(front.columns)
    assert on["checkpoint_uri"].tolist() == ["file:///c/1/best.pt", "file:///c/2/best.pt", "file:///c/0/best.pt"]
    # r3 is dominated by the point estimates, but these trials logged no intervals: no difference
    # can be told from noise, so nothing separably dominates it and it stands on the candidate front.
    assert front.set_index("run_id").loc["r3", ["on_front", "candidate"]].tolist() == [False, True]
    pd.testing.assert_frame_equal(pd.read_csv(paths["front.csv"]), front, check_dtype=False)
    assert_png(paths["pareto.png"])


def test_write_pareto_minimizes_fisher_divergence_by_default(tmp_path):
    x, y = [0.5, 0.7, 0.6, 0.2], [0.9, 0.1, 0.5, 0.05]
    paths = write_pareto(trials(x, y), tmp_path, "test_acc", "fisher_divergence", stem="fd_")
    front = pd.read_csv(paths["fd_front.csv"])
    expected = brute_force_front(np.array(x), -np.array(y))
    assert set(front.loc[front["on_front"], "run_id"]) == {f"r{i}" for i in np.flatnonzero(expected)} == {"r1", "r3"}
    assert_png(paths["fd_pareto.png"])


def test_one_seed_points_keep_their_own_intervals_and_the_confirmed_numbers_stand_beside(tmp_path):
    frame = trials([0.6, 0.5, 0.9], [0.7, 0.9, 0.1])
    frame["config_key"] = ["a", "b", "c"]
    frame["run_name"] = ["sm λ1e-3 s0", "sm λ1e-4 s0", "sm λ1e-5 s0"]
    for col in ("test_acc", "gan_test"):
        frame[f"{col}_lo"], frame[f"{col}_hi"] = frame[col] - 0.05, frame[col] + 0.03
    frame["confirm_gan_test"] = [np.nan, 0.8, np.nan]
    front = pd.read_csv(write_pareto(frame, tmp_path)["front.csv"]).set_index("run_name")
    # One seed and no point with two: the run's own, asymmetric, logged interval (evaluation only).
    assert front.loc["sm λ1e-4 s0", ["gan_test_lo", "gan_test_hi"]].tolist() == pytest.approx([0.85, 0.93])
    assert front.loc["sm λ1e-4 s0", "interval"] == "evaluation only"
    # Confirmed numbers beside the selection numbers, never replacing them.
    assert front.loc["sm λ1e-4 s0", ["gan_test", "confirm_gan_test"]].tolist() == pytest.approx([0.9, 0.8])
    columns = list(front.reset_index().columns)
    assert columns.index("gan_test_lo") == columns.index("gan_test") + 1


def test_a_points_seeds_are_averaged_with_the_pooled_variance_and_exported_with_their_ends(tmp_path):
    # r0, r1: two seeds of one point (same config_key); r2 and r3 one seed each.
    frame = trials([0.6, 0.8, 0.5, 0.9], [0.7, 0.5, 0.9, 0.1])
    frame["config_key"] = ["a", "a", "b", "c"]
    frame["run_name"] = ["sm λ1e-3 s0", "sm λ1e-3 s1", "sm λ1e-4 s0", "sm λ1e-5 s0"]
    for col in ("test_acc", "gan_test"):
        frame[f"{col}_lo"], frame[f"{col}_hi"] = frame[col] - 0.05, frame[col] + 0.03
    paths = write_pareto(frame, tmp_path)
    front = pd.read_csv(paths["front.csv"]).set_index("run_name")
    # The point 'a' is (0.7, 0.6) over 2 seeds; its spread is the only one measured: s² = 0.02 on
    # 1 d.f. for both metrics, so every point's interval is x̄ ± t(1)·s/√n, kept within [0, 1].
    assert front.loc["sm λ1e-3", ["test_acc", "gan_test", "seeds"]].tolist() == pytest.approx([0.7, 0.6, 2])
    half = 12.706204736 * math.sqrt(0.02) / math.sqrt(2)  # 1.2706: wider than [0, 1]
    assert front.loc["sm λ1e-3", ["test_acc_lo", "test_acc_hi"]].tolist() == pytest.approx(
        [max(0.7 - half, 0.0), min(0.7 + half, 1.0)])
    assert front.loc["sm λ1e-3", "interval"] == "pooled over seeds"
    one = 12.706204736 * math.sqrt(0.02)  # a one-seed point with the same pooled sd: t(1)·s/√1
    assert front.loc["sm λ1e-4 s0", ["gan_test_lo", "gan_test_hi"]].tolist() == pytest.approx(
        [max(0.9 - one, 0.0), min(0.9 + one, 1.0)])
    assert set(front.index) == {"sm λ1e-3", "sm λ1e-4 s0", "sm λ1e-5 s0"}
    assert_png(paths["pareto.png"])


def test_the_candidate_front_keeps_what_the_noise_cannot_separate_and_drops_what_it_can(tmp_path):
    # Six points with two seeds each (pooled sd 0.01 on 6 d.f.): A and B far apart on the front;
    # C dominated by A by 0.005 on each axis (within the noise): a candidate; D dominated by A by
    # 0.2 on both: separably dominated.
    values = {"A": (0.90, 0.50), "B": (0.50, 0.90), "C": (0.895, 0.495), "D": (0.70, 0.30), "E": (0.4, 0.4),
              "F": (0.3, 0.3)}
    rows = []
    for key, (x, y) in values.items():
        for seed, d in ((0, -0.01), (1, 0.01)):
            rows.append((key, seed, x + d, y - d))
    frame = trials([r[2] for r in rows], [r[3] for r in rows])
    frame["config_key"] = [r[0] for r in rows]
    frame["run_name"] = [f"{r[0]} s{r[1]}" for r in rows]
    front = pd.read_csv(write_pareto(frame, tmp_path)["front.csv"]).set_index("run_name")
    assert front.loc[["A", "B"], "on_front"].all() and front.loc[["A", "B"], "candidate"].all()
    assert front.loc["C", ["on_front", "candidate"]].tolist() == [False, True]
    assert "D" not in front.index and "F" not in front.index  # separably dominated, on no front


def test_front_labels_never_overlap_each_other_or_the_points():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    xs, ys = np.sort(rng.uniform(0.6, 0.9, 12)), np.sort(rng.uniform(0.2, 0.9, 12))[::-1]
    xs[3:6], ys[3:6] = xs[3] + np.array([0, 0.002, 0.004]), ys[3] - np.array([0, 0.003, 0.006])  # a tight cluster
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(xs, ys)
    ax.margins(0.12)
    fig.tight_layout()
    labels = place_labels(ax, xs, ys, [f"sm λ1e-{i} μ1e-{i % 4}" for i in range(12)])
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert len(boxes) == 12
    assert all(_overlap(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1:])
    centres = ax.transData.transform(np.c_[xs, ys])
    assert not any(box.contains(cx, cy) for box in boxes for cx, cy in centres)
    plt.close(fig)
