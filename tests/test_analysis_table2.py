"""Table 2 on a hand-built frame: orientation, cell text, seed aggregation, diverged cells, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.runs import AnalysisError
from analysis.table2 import _colour_note, caption, cell_stats, separability, table2_frame, table2_values, write_table2
from helpers import assert_png


def trial(lam, mu, acc, gan, status="finished", loss="score_matching", seed=0, **extra) -> dict:
    return {"run_id": f"{loss}-{lam}-{mu}-{seed}-{status}", "run_name": f"{loss} λ={lam} μ={mu} s{seed}",
            "loss": loss, "lam": lam, "mu": mu, "seed": seed, "status": status, "epochs": 2,
            "epochs_done": 2 if status == "finished" else 1, "test_acc": acc, "gan_test": gan,
            "objective": np.nan if status == "diverged" else (acc + (0 if np.isnan(gan) else gan)) / 2,
            "fisher_divergence": 10 * lam, **extra}


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = [
        trial(1e-2, 1e-3, 0.60, 0.40, seed=0), trial(1e-2, 1e-3, 0.70, 0.50, seed=1),
        trial(1e-2, 1e-5, np.nan, np.nan, "diverged"),
        trial(1e-4, 1e-3, 0.7523, 0.80), trial(1e-4, 1e-3, np.nan, np.nan, "diverged", seed=1),
        *(trial(1e-6, 1e-5, acc, np.nan, seed=s) for s, acc in enumerate([0.5, 0.6, 0.7])),
        trial(1e-6, 1e-3, 0.9, 0.9, "stopped"),
        trial(0.0, 0.0, 0.76, 0.60, loss="ce"),
        trial(1e-3, 0.0, 0.74, 0.70, loss="grad_norm"),
    ]
    frame = pd.DataFrame(rows)
    for col in ("seed", "epochs", "epochs_done"):
        frame[col] = frame[col].astype("Int64")
    return frame


def test_orientation_and_cell_text(frame):
    table = table2_frame(frame)
    assert table.index.tolist() == [1e-2, 1e-4, 1e-6]  # λ: largest at the top, as in the paper
    assert table.columns.tolist() == [1e-3, 1e-5]  # μ: largest on the left
    # Two seeds: mean ± Student's t half-width, t(1) · sd / √2 = 12.706 · 0.0707 / 1.414 = 63.53 points.
    assert table.loc[1e-2, 1e-3] == "65.00 ± 63.53% / 45.00 ± 63.53% (n=2)"
    assert table.loc[1e-2, 1e-5] == "diverged"
    assert table.loc[1e-4, 1e-3] == "75.23% / 80.00% [1 diverged]"
    assert table.loc[1e-4, 1e-5] == ""  # never run
    # t(2) · 0.1 / √3 = 4.303 · 0.0577 = 24.84 points; no judge: GAN-test not logged.
    assert table.loc[1e-6, 1e-5] == "60.00 ± 24.84% / – (n=3)"
    assert table.loc[1e-6, 1e-3] == "stopped"  # stopped early: not averaged in


def test_stats_and_values_match_the_text(frame):
    stats = cell_stats(frame).set_index(["lam", "mu"])
    assert stats.loc[(1e-2, 1e-3), "n"] == 2
    assert stats.loc[(1e-4, 1e-3), ["n", "n_diverged"]].tolist() == [1, 1]
    assert stats.loc[(1e-6, 1e-5), "test_acc_std"] == pytest.approx(0.1)
    values = table2_values(frame, "test_acc")
    assert values.loc[1e-2, 1e-3] == pytest.approx(0.65)
    assert np.isnan(values.loc[1e-2, 1e-5]) and np.isnan(values.loc[1e-4, 1e-5])


def test_paper_axes_and_caption(frame):
    table = table2_frame(frame, axes="paper")
    assert table.index.tolist() == [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    assert table.columns.tolist() == [1e-2, 1e-3, 1e-4, 1e-5]
    assert table.loc[1e-3, 1e-2] == ""
    assert caption(frame) == ["baseline: 76.00% / 60.00%", "gradient norm (λ=1e-03): 74.00% / 70.00%"]


def test_write_table2_files(frame, tmp_path):
    paths = write_table2(frame, tmp_path, metric="fisher_divergence")  # a metric minimized
    assert sorted(paths) == ["table2.csv", "table2.md", "table2.png"]
    assert_png(paths["table2.png"])
    md = paths["table2.md"].read_text().splitlines()
    assert md[0] == "| λ ↓ / μ → | 1e-03 | 1e-05 |"
    assert md[2] == "| **1e-02** | 65.00 ± 63.53% / 45.00 ± 63.53% (n=2) | diverged |"
    assert "- baseline: 76.00% / 60.00%" in md
    csv = pd.read_csv(paths["table2.csv"])
    assert len(csv) == 5 and "fisher_divergence_mean" in csv.columns


def test_no_score_matching_trials_is_an_error(frame, tmp_path):
    with pytest.raises(AnalysisError, match="no score-matching trials"):
        write_table2(frame[frame["loss"] != "score_matching"], tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_off_grid_search_is_not_a_table(tmp_path):
    rng = np.random.default_rng(0)
    sampled = pd.DataFrame([trial(lam, mu, 0.5, 0.5) for lam, mu in 10 ** rng.uniform(-6, -2, (30, 2))])
    with pytest.raises(AnalysisError, match="not a grid"):
        write_table2(sampled, tmp_path)


def with_intervals(acc, gan, half_acc, half_gan, **kw) -> dict:
    """A one-seed trial whose logged intervals are value ± half (objective: the weighted mean's)."""
    row = trial(1e-3, kw.pop("mu"), acc, gan, **kw)
    obj_half = 0.5 * np.hypot(half_acc, half_gan)
    return {**row, "test_acc_lo": acc - half_acc, "test_acc_hi": acc + half_acc, "gan_test_lo": gan - half_gan,
            "gan_test_hi": gan + half_gan, "objective_lo": row["objective"] - obj_half,
            "objective_hi": row["objective"] + obj_half, "selection_split": "val"}


def test_one_seed_cells_carry_their_own_interval_and_separability_is_marked(tmp_path):
    frame = pd.DataFrame([
        with_intervals(0.80, 0.60, 0.02, 0.04, mu=1e-2),  # objective 0.700 ± 0.022: best
        with_intervals(0.78, 0.58, 0.02, 0.04, mu=1e-3),  # 0.680 ± 0.022: overlaps the best
        with_intervals(0.50, 0.40, 0.02, 0.04, mu=1e-4),  # 0.450 ± 0.022: apart
        {**with_intervals(0.70, 0.50, 0.02, 0.04, mu=1e-4, seed=1), "confirm_test_acc": 0.69,
         "confirm_test_acc_lo": 0.67, "confirm_test_acc_hi": 0.71, "confirm_gan_test": 0.45},
    ])
    for col in ("seed", "epochs", "epochs_done"):
        frame[col] = frame[col].astype("Int64")
    table = table2_frame(frame.iloc[:3])
    assert table.loc[1e-3, 1e-2] == "80.00 ± 2.00% / 60.00 ± 4.00%"
    stats = cell_stats(frame.iloc[:3]).set_index("mu")
    assert stats.loc[1e-2, ["objective_lo", "objective_hi"]].tolist() == pytest.approx([0.7 - 0.02236, 0.7 + 0.02236],
                                                                                      abs=1e-5)
    assert separability(cell_stats(frame.iloc[:3]), "objective").tolist() == ["best", "not separable", ""]
    paths = write_table2(frame.iloc[:3], tmp_path)
    md = paths["table2.md"].read_text()
    assert "80.00 ± 2.00% / 60.00 ± 4.00% **(best)**" in md
    assert "78.00 ± 2.00% / 58.00 ± 4.00% (not separable from best)" in md
    assert "Best cell by objective: λ=1e-03 μ=1e-02, 0.700 [0.678, 0.722]; not separable from it" in md
    assert_png(paths["table2.png"])
    # Confirmed numbers beside, not instead of, those that selected; two seeds now use t.
    text = table2_frame(frame).loc[1e-3, 1e-4]
    assert text.startswith("60.00 ± 127.06% / 45.00 ± 63.53% (n=2); confirmed 69.00 ± 2.00% / 45.00%"), text


def test_the_heatmap_names_the_split_the_objective_read():
    assert "validation split" in _colour_note("objective", "val")
    assert "read on the test split" in _colour_note("objective", "test")
    assert "test accuracy" not in _colour_note("objective", "val")
