"""Pareto fronts of any two metrics (accuracy against GAN-test by default) over a sweep's trials.

Dominance, with every metric oriented so that larger is better (a minimized metric is negated):
run ``a`` dominates run ``b`` when ``a`` is at least as good as ``b`` on both metrics and
strictly better on at least one. The front is the set of runs no run dominates; exact
duplicates dominate neither each other, so all copies of a front point stay on the front.

A front is a selection, so it ranks by what the trials selected by: validation accuracy by default
(test accuracy for trials tagged as selected on the test set), never a test-set column for trials
that had a validation split. Trials that selected on different splits, or whose GAN-test came from
different judges, are refused (:func:`analysis.runs.check_comparable`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.runs import (LABELS, LOWER_IS_BETTER, PERCENT, AnalysisError, check_comparable, check_not_test,
                           column_name, completed, describe, metric_column, selection_accuracy)
from sweep.record import LOSS_NAMES, Status

# Columns exported with a front (those present in the frame), then the two metrics.
FRONT_COLUMNS = ("run_id", "run_name", "sweep", "loss", "lam", "mu", "sigma", "seed", "status",
                 "epochs", "epochs_done", "val_acc", "test_acc", "gan_test", "objective", "selection_split",
                 "judge", "judge_arch", "checkpoint_uri")


def default_minimize(*metrics: str) -> tuple[str, ...]:
    """The given metrics that are better when smaller (losses, Fisher divergences)."""
    return tuple(m for m in metrics if m in LOWER_IS_BETTER)


def front_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points, both coordinates maximized.

    Sort by x descending; a point survives when it has the largest y among the points with
    its x and a y strictly above every point with a larger x. O(n log n).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.lexsort((-y, -x))  # x descending, then y descending
    xs, ys = x[order], y[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1
    group_max = ys[new_group]  # first of each group holds its largest y
    # Largest y among strictly larger x: running max of the previous groups' maxima.
    before = np.r_[-np.inf, np.maximum.accumulate(group_max)[:-1]]
    keep_sorted = (ys == group_max[group]) & (ys > before[group])
    mask = np.empty(len(x), dtype=bool)
    mask[order] = keep_sorted
    return mask


def front_axes(frame: pd.DataFrame, x: str | None, y: str) -> tuple[str, str]:
    """The front's two columns after the checks: one selection split, one judge when GAN-test is
    an axis, no test-set column for trials selected on validation; ``x=None`` is the accuracy the
    trials selected by (val_acc, or test_acc for trials selected on test)."""
    split = check_comparable(frame, gan_test="gan_test" in {column_name(x or ""), column_name(y)})
    xc, yc = metric_column(frame, x or selection_accuracy(split)), metric_column(frame, y)
    check_not_test(split, xc, yc)
    return xc, yc


def pareto_front(
    frame: pd.DataFrame,
    x: str | None = None,
    y: str = "gan_test",
    include_stopped: bool = False,
    minimize: Collection[str] = (),
) -> pd.DataFrame:
    """The non-dominated trials of ``frame`` on metrics ``x`` and ``y``, best ``x`` first.

    Both metrics are maximized except those named in ``minimize``; ``x=None`` is the accuracy the
    trials selected by (see :func:`front_axes`). Only trials that ran to the end are candidates
    (see :func:`analysis.runs.completed`) unless ``include_stopped``; trials missing either metric
    are left out. Raises AnalysisError when no candidate remains, or when the trials are not
    comparable (mixed selection splits or judges, a test-set axis on trials selected on val).
    """
    xc, yc = front_axes(frame, x, y)
    minimized = {column_name(m) for m in minimize}
    if minimized - {xc, yc}:
        raise AnalysisError(f"cannot minimize {', '.join(sorted(minimized - {xc, yc}))}: "
                            f"the front's metrics are {xc} and {yc}")
    sign = {c: -1.0 if c in minimized else 1.0 for c in (xc, yc)}
    pool = frame[completed(frame, include_stopped)]
    pool = pool[pool[xc].notna() & pool[yc].notna()]
    if pool.empty:
        what = f"{Status.FINISHED} or {Status.STOPPED}" if include_stopped else Status.FINISHED
        raise AnalysisError(f"no {what} trial has both {xc} and {yc}")
    mask = front_mask(sign[xc] * pool[xc].to_numpy(float), sign[yc] * pool[yc].to_numpy(float))
    front = pool[mask]
    return front.sort_values(xc, ascending=sign[xc] < 0, kind="stable")


def export_columns(front: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The front's columns worth exporting: ids, λ, μ, metrics, checkpoint URIs."""
    cols = [c for c in FRONT_COLUMNS if c in front.columns]
    cols += [c for c in (x, y) if c not in cols]
    return front[cols].reset_index(drop=True)


def _axis_values(values: pd.Series, metric: str) -> pd.Series:
    return values * 100 if metric in PERCENT else values


def plot_front(frame: pd.DataFrame, front: pd.DataFrame, x: str, y: str, path: Path,
               include_stopped: bool = False, title: str = "") -> Path:
    """Scatter every trial, the front highlighted and joined by its staircase; writes a PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    candidate = completed(frame, include_stopped)
    others = frame[~candidate & frame[x].notna() & frame[y].notna()]
    pool = frame[candidate & frame[x].notna() & frame[y].notna()]
    if len(others):  # the legend lists only markers that appear
        ax.scatter(_axis_values(others[x], x), _axis_values(others[y], y), marker="x", color="0.7",
                   label="stopped / diverged / running")
    for loss, group in pool.groupby("loss", dropna=False, sort=True):
        ax.scatter(_axis_values(group[x], x), _axis_values(group[y], y), s=24, alpha=0.7,
                   label=LOSS_NAMES[loss].short if loss in LOSS_NAMES else str(loss))
    fx, fy = _axis_values(front[x], x), _axis_values(front[y], y)
    ax.plot(fx, fy, drawstyle="steps-post", color="crimson", lw=1, zorder=2)
    ax.scatter(fx, fy, s=70, facecolors="none", edgecolors="crimson", lw=1.5, zorder=3, label="Pareto front")
    ax.margins(0.08)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for px, py, (_, row) in zip(fx, fy, front.iterrows()):
        if row.get("loss") == "score_matching":
            # Labels point into the plot, away from the nearest edges.
            right, top = px > (x0 + x1) / 2, py > (y0 + y1) / 2
            ax.annotate(f"λ={row['lam']:.0e} μ={row['mu']:.0e}", (px, py), fontsize=7,
                        xytext=(-8 if right else 8, -10 if top else 8), textcoords="offset points",
                        ha="right" if right else "left", va="top" if top else "bottom")
    ax.set_xlabel(LABELS.get(x, x) + (" (lower is better)" if x in LOWER_IS_BETTER else ""))
    ax.set_ylabel(LABELS.get(y, y) + (" (lower is better)" if y in LOWER_IS_BETTER else ""))
    kind = f"{Status.FINISHED} or {Status.STOPPED}" if include_stopped else Status.FINISHED
    ax.set_title(title or f"Pareto front, {describe(frame)}: {len(front)} of {len(pool)} {kind} trials", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_pareto(frame: pd.DataFrame, out_dir: Path, x: str | None = None, y: str = "gan_test",
                 include_stopped: bool = False, minimize: Collection[str] | None = None,
                 stem: str = "") -> dict[str, Path]:
    """Compute the front and write ``front.parquet``, ``front.csv`` and ``pareto.png``.

    ``stem`` is put before each name (``stem + "front.csv"``) to keep variants apart;
    ``minimize=None`` minimizes the metrics that are better when smaller; ``x=None`` is the
    accuracy the trials selected by.
    """
    xc, yc = front_axes(frame, x, y)
    minimize = default_minimize(xc, yc) if minimize is None else minimize
    front = pareto_front(frame, xc, yc, include_stopped=include_stopped, minimize=minimize)
    table = export_columns(front, xc, yc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {f"{stem}front.parquet": out_dir / f"{stem}front.parquet",
             f"{stem}front.csv": out_dir / f"{stem}front.csv",
             f"{stem}pareto.png": out_dir / f"{stem}pareto.png"}
    table.to_parquet(paths[f"{stem}front.parquet"], index=False)
    table.to_csv(paths[f"{stem}front.csv"], index=False)
    plot_front(frame, front, xc, yc, paths[f"{stem}pareto.png"], include_stopped)
    return paths
