"""Table 2 on a hand-built frame: orientation, cell text, every seed counted with the pooled
run-to-run variance (by hand), partly diverged cells, marks by the difference test, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.runs import AnalysisError
from analysis.table2 import (_colour_note, caption, cell_stats, cell_verdict, separability, table2_frame, table2_values,
                             write_table2)
from helpers import assert_png
from trainer import items
from trainer.stats import t_quantile


def trial(lam, mu, acc, gan, status="finished", loss="score_matching", seed=0, **extra) -> dict:
    return {"run_id": f"{loss}-{lam}-{mu}-{seed}-{status}", "run_name": f"{loss} λ={lam} μ={mu} s{seed}",
            "config_key": f"{loss}-{lam}-{mu}", "loss": loss, "lam": lam, "mu": mu, "seed": seed, "status": status, "epochs": 2,
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


def _pooled_half(sd: float, df: int, n: int) -> float:
    return t_quantile(df) * sd / math.sqrt(n)


def _pct(lo: float, hi: float) -> str:
    return f"[{max(lo, 0) * 100:.1f}, {min(hi, 1) * 100:.1f}]"


def test_orientation_and_cell_text_with_every_seed_and_the_pooled_variance(frame):
    table = table2_frame(frame)
    assert table.index.tolist() == [1e-2, 1e-4, 1e-6]  # λ: largest at the top, as in the paper
    assert table.columns.tolist() == [1e-3, 1e-5]  # μ: largest on the left
    # Test accuracy's run-to-run variance, pooled by hand over the cells with >= 2 finished seeds:
    # (0.6, 0.7) gives 0.005 on 1 d.f., (0.5, 0.6, 0.7) gives 0.02 on 2 d.f.: s² = 0.025 / 3, 3 d.f.
    sd_acc = math.sqrt(0.025 / 3)
    # GAN-test: only (0.4, 0.5): 0.005 on 1 d.f.
    sd_gan = math.sqrt(0.005)
    h = _pooled_half(sd_acc, 3, 2)
    g = _pooled_half(sd_gan, 1, 2)
    assert table.loc[1e-2, 1e-3] == f"65.0% {_pct(0.65 - h, 0.65 + h)} / 45.0% {_pct(0.45 - g, 0.45 + g)} (n=2)"
    # A diverged seed counts at 0 (the worst value), and the cell says how many finished.
    one = _pooled_half(sd_acc, 3, 1)
    assert table.loc[1e-2, 1e-5] == f"0.0% {_pct(-one, one)} / 0.0% {_pct(0, _pooled_half(sd_gan, 1, 1))} (0/1 finished)"
    mean = (0.7523 + 0) / 2
    assert table.loc[1e-4, 1e-3] == f"37.6% {_pct(mean - h, mean + h)} / 40.0% {_pct(0.4 - g, 0.4 + g)} (1/2 finished)"
    assert table.loc[1e-4, 1e-5] == ""  # never run
    h3 = _pooled_half(sd_acc, 3, 3)
    assert table.loc[1e-6, 1e-5] == f"60.0% {_pct(0.6 - h3, 0.6 + h3)} / – (n=3)"  # no judge: no GAN-test
    assert table.loc[1e-6, 1e-3] == "stopped"  # stopped early: not averaged in


def test_survivors_alone_would_look_better_than_the_cell(frame):
    stats = cell_stats(frame, "test_acc").set_index(["lam", "mu"])
    cell = stats.loc[(1e-4, 1e-3)]
    assert (cell["n"], cell["n_finished"], cell["n_diverged"]) == (2, 1, 1)
    assert cell["test_acc_mean"] == pytest.approx(0.7523 / 2)  # not 0.7523, the one that survived
    assert cell["test_acc_interval"] == "pooled over seeds"


def test_stats_and_values_match_the_text(frame):
    stats = cell_stats(frame).set_index(["lam", "mu"])
    assert stats.loc[(1e-2, 1e-3), "n"] == 2
    assert stats.loc[(1e-4, 1e-3), ["n", "n_diverged"]].tolist() == [2, 1]
    assert stats.loc[(1e-6, 1e-5), "test_acc_std"] == pytest.approx(0.1)
    values = table2_values(frame, "test_acc")
    assert values.loc[1e-2, 1e-3] == pytest.approx(0.65)
    assert values.loc[1e-2, 1e-5] == 0.0 and np.isnan(values.loc[1e-4, 1e-5])


def test_paper_axes_and_caption(frame):
    table = table2_frame(frame, axes="paper")
    assert table.index.tolist() == [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    assert table.columns.tolist() == [1e-2, 1e-3, 1e-4, 1e-5]
    assert table.loc[1e-3, 1e-2] == ""
    # One seed each, with the grid's pooled variance: t(3)·s_acc and t(1)·s_gan wide.
    acc, gan = _pooled_half(math.sqrt(0.025 / 3), 3, 1), _pooled_half(math.sqrt(0.005), 1, 1)
    assert caption(frame) == [f"baseline: 76.0% {_pct(0.76 - acc, 0.76 + acc)} / 60.0% {_pct(0.6 - gan, 0.6 + gan)} (n=1)",
                              f"gradient norm (λ=1e-03): 74.0% {_pct(0.74 - acc, 0.74 + acc)} / 70.0% "
                              f"{_pct(0.7 - gan, 0.7 + gan)} (n=1)"]


def test_write_table2_files(frame, tmp_path):
    paths = write_table2(frame, tmp_path, metric="fisher_divergence")  # a metric minimized
    assert sorted(paths) == ["table2.csv", "table2.md", "table2.png"]
    assert_png(paths["table2.png"])
    md = paths["table2.md"].read_text().splitlines()
    assert md[0] == "| λ ↓ / μ → | 1e-03 | 1e-05 |"
    assert md[2].startswith("| **1e-02** | 65.0% [44.5, 85.5] / 45.0% [0.0, 100.0] (n=2); fisher_divergence 0.100")
    assert any(line.startswith("- baseline: 76.0% [46.9, 100.0] / 60.0% [0.0, 100.0] (n=1)") for line in md)
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


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("seed", "epochs", "epochs_done"):
        frame[col] = frame[col].astype("Int64")
    return frame


def test_one_seed_cells_carry_their_own_interval_and_the_difference_test_marks_them(tmp_path):
    frame = _typed(pd.DataFrame([
        with_intervals(0.80, 0.60, 0.02, 0.04, mu=1e-2),  # objective 0.700 ± 0.022: best
        with_intervals(0.78, 0.58, 0.02, 0.04, mu=1e-3),  # 0.680 ± 0.022: 0.02 below, se of the difference 0.016
        with_intervals(0.50, 0.40, 0.02, 0.04, mu=1e-4),  # 0.450 ± 0.022: apart
    ]))
    table = table2_frame(frame)
    assert table.loc[1e-3, 1e-2] == "80.0% [78.0, 82.0] / 60.0% [56.0, 64.0] (n=1)"  # the run's own interval
    stats = cell_stats(frame).set_index("mu")
    assert stats.loc[1e-2, ["objective_lo", "objective_hi"]].tolist() == pytest.approx([0.7 - 0.02236, 0.7 + 0.02236],
                                                                                      abs=1e-5)
    assert stats.loc[1e-2, "objective_interval"] == "evaluation only"
    stats = cell_stats(frame)
    assert separability(frame, stats, "objective").tolist() == ["best", "not separable", ""]
    verdict = cell_verdict(frame, "objective")
    d = verdict.differences[(1e-3, 1e-3)]
    se = math.hypot(0.02236 / 1.96, 0.02236 / 1.96)  # unpaired: no per-item outcomes logged
    assert d.estimate == pytest.approx(0.02) and d.se == pytest.approx(se, rel=1e-3) and d.how == "unpaired"
    assert verdict.family == 3  # the best was picked from these numbers: every pair
    paths = write_table2(frame, tmp_path)
    md = paths["table2.md"].read_text()
    assert "80.0% [78.0, 82.0] / 60.0% [56.0, 64.0] (n=1); objective 0.700 [0.678, 0.722] **(best)**" in md
    assert "78.0% [76.0, 80.0] / 58.0% [54.0, 62.0] (n=1); objective 0.680 [0.658, 0.702] (not separable from best)" in md
    assert ("Best cell (the best mean objective): λ=1e-03 μ=1e-02, objective 0.700 [0.678, 0.722]; not separable from it"
            in md) and "Holm over 3 pairs of cells" in md
    assert "cover the evaluation's noise only" in md
    assert_png(paths["table2.png"])
    # The sweep's best point (its parent's sweep.best_run) is the best cell, whatever the table's means say.
    second = frame.loc[1, "run_id"]
    assert separability(frame, stats, "objective", best_run=second).tolist() == ["not separable", "best", ""]
    assert "Best cell (the sweep's best point (its confirmation)): λ=1e-03 μ=1e-03" in write_table2(
        frame, tmp_path, best_run=second)["table2.md"].read_text()


def test_confirmed_numbers_stand_beside_those_that_selected_and_retrains_alone_make_them(tmp_path):
    own = {**with_intervals(0.70, 0.50, 0.02, 0.04, mu=1e-4), "confirm_test_acc": 0.69, "confirm_test_acc_lo": 0.67,
           "confirm_test_acc_hi": 0.71, "confirm_gan_test": 0.45, "retrain": False}
    retrains = [{**with_intervals(acc, 0.5, 0.02, 0.04, mu=1e-4, seed=seed), "confirm_test_acc": acc,
                 "confirm_gan_test": 0.4, "retrain": True} for seed, acc in ((1000, 0.60), (1001, 0.64))]
    frame = _typed(pd.DataFrame([own, *retrains, with_intervals(0.80, 0.60, 0.02, 0.04, mu=1e-2)]))
    text = table2_frame(frame).loc[1e-3, 1e-4]
    # Every seed in the selection numbers (0.70, 0.60, 0.64: mean 0.647), the retrains alone in the
    # confirmed ones (0.60, 0.64: mean 0.620), never the selected run's 0.69.
    assert text.startswith("64.7% [") and "(n=3); confirmed 62.0% [" in text and text.endswith("(n=2)"), text
    stats = cell_stats(frame).set_index("mu")
    assert stats.loc[1e-4, "confirm_test_acc_mean"] == pytest.approx(0.62)
    assert stats.loc[1e-4, "confirm_n"] == 2


def _items(bits: np.ndarray) -> str:
    return items.encode(bits)


def test_paired_items_separate_where_the_unpaired_test_cannot():
    # Two one-seed cells scored on the same 144 validation images and 128 samples: B gets the same
    # items right as A except 12 validation images more wrong. Unpaired, 0.042 against an s.e. of
    # the difference near 0.03 is not separable; paired, the 12 discordant images are.
    rng = np.random.default_rng(0)
    val_a = rng.random(144) < 0.9
    val_b = val_a.copy()
    val_b[np.flatnonzero(val_a)[:12]] = False
    gan = rng.random(128) < 0.6
    rows = []
    for mu, val in ((1e-2, val_a), (1e-3, val_b)):
        acc, g = val.mean(), gan.mean()
        row = trial(1e-3, mu, acc, g)
        rows.append({**row, "val_acc": acc, "objective": (acc + g) / 2, "objective_lo": (acc + g) / 2 - 0.045,
                     "objective_hi": (acc + g) / 2 + 0.045, "items_val_acc": _items(val), "items_gan_test": _items(gan),
                     "items_epoch": 2.0, "objective_def": json.dumps({"name": "weighted", "weight": 0.5, "split": "val"}),
                     "selection_split": "val"})
    frame = _typed(pd.DataFrame(rows))
    verdict = cell_verdict(frame, "objective")
    d = verdict.differences[(1e-3, 1e-3)]
    assert d.how == "paired over 128 items" and d.estimate == pytest.approx(0.5 * 12 / 144)
    # by hand: per-image differences of the weighted objective, GAN-test identical (no variance)
    diff = 0.5 * (val_a.astype(float) - val_b)
    assert d.se == pytest.approx(math.sqrt(diff.var(ddof=1) / 144), rel=1e-4)
    assert verdict.separable[(1e-3, 1e-3)] and d.p_value < 0.01
    frame.loc[1, "items_epoch"] = 1.0  # outcomes of an earlier evaluation than the value: not paired
    assert cell_verdict(frame, "objective").differences[(1e-3, 1e-3)].how == "unpaired"


def test_the_heatmap_names_the_split_the_objective_read():
    assert "validation split" in _colour_note("objective", "val")
    assert "read on the test split" in _colour_note("objective", "test")
    assert "test accuracy" not in _colour_note("objective", "val")
