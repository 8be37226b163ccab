"""Pareto fronts of any two metrics (accuracy against GAN-test by default) over a sweep's trials.

Dominance, with every metric oriented so that larger is better (a minimized metric is negated):
run ``a`` dominates run ``b`` when ``a`` is at least as good as ``b`` on both metrics and
strictly better on at least one. The front is the set of runs no run dominates; exact
duplicates dominate neither each other, so all copies of a front point stay on the front.

A front is a selection, so it ranks by what the trials selected by: validation accuracy by default
(test accuracy for trials tagged as selected on the test set), never a test-set column for trials
that had a validation split. Trials that selected on different splits, or whose GAN-test came from
different judges, are refused (:func:`analysis.runs.check_comparable`).

The exported and drawn front (:func:`write_pareto`) is over points: a point's seeds are averaged
(:func:`analysis.verdicts.point_means`: every seed that ended, a diverged one at the worst value),
each number carrying its 95 % interval (the pooled run-to-run variance where points have several
seeds, else one run's own Wilson/propagated interval, the evaluation's only) in
``<col>_lo``/``<col>_hi`` columns, and the plot draws those intervals as error bars. The front of
point estimates is one draw of the noise, so beside it stand the points that no other point
*separably* dominates (:func:`analysis.verdicts.not_dominated`): the candidate front, which
``front.csv`` flags (``on_front``, ``candidate``) and the plot marks. Where a finalist was
confirmed on fresh draws, the ``confirm_*`` columns stand beside the selection numbers that put it
on the front.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

from analysis import verdicts
from analysis.runs import (CONFIRMED, INTERVALS, LABELS, LOWER_IS_BETTER, PERCENT, AnalysisError, check_comparable,
                           check_not_test, column_name, completed, describe, metric_column, selection_accuracy)
from sweep.record import LOSS_NAMES, Status

# Columns exported with a front (those present in the frame), then the two metrics; each metric
# of WITH_INTERVAL is followed by its interval's ends (<col>_lo, <col>_hi).
FRONT_COLUMNS = ("run_id", "run_name", "sweep", "loss", "lam", "mu", "sigma", "seed", "seeds", "finished_seeds",
                 "on_front", "candidate", "interval",
                 "status", "epochs", "epochs_done", "val_acc", "test_acc", "gan_test", "objective",
                 "confirm_test_acc", "confirm_gan_test", "confirm_objective", "selection_split", "judge",
                 "judge_arch", "checkpoint_uri")
WITH_INTERVAL = frozenset(INTERVALS)
MARKER_PX = 6  # half-size of a front marker in pixels: labels keep clear of it
LABEL_OFFSETS = tuple((dx * r, dy * r) for r in (6, 14, 26, 40)
                      for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)))


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
    """The front's columns worth exporting: ids, λ, μ, metrics with their intervals, the confirmed
    numbers when logged, checkpoint URIs."""
    cols = [c for c in FRONT_COLUMNS if c in front.columns]
    cols += [c for c in (x, y) if c not in cols]
    cols = [c for c in cols if not (c.startswith("confirm_") and front[c].isna().all())]
    cols = [e for c in cols for e in ([c, f"{c}_lo", f"{c}_hi"] if c in WITH_INTERVAL else [c]) if e in front.columns]
    return front[cols].reset_index(drop=True)


def point_front(frame: pd.DataFrame, x: str, y: str, include_stopped: bool = False,
                minimize: Collection[str] = ()) -> pd.DataFrame:
    """:func:`pareto_front` over points: each point's seeds averaged first
    (:func:`analysis.verdicts.point_means`, with the intervals of its metrics)."""
    points = verdicts.point_means(frame, [x, y, *INTERVALS], include_stopped)
    if points.empty:
        return pareto_front(frame, x, y, include_stopped, minimize)  # raises the usual error
    return pareto_front(points, x, y, include_stopped=include_stopped, minimize=minimize)


def fronts_with_noise(frame: pd.DataFrame, x: str, y: str, include_stopped: bool = False,
                      minimize: Collection[str] = ()) -> pd.DataFrame:
    """The points on the point-estimate front or the candidate front (not separably dominated),
    best ``x`` first, with boolean columns ``on_front`` and ``candidate``."""
    points = verdicts.point_means(frame, [x, y, *INTERVALS], include_stopped)
    front = point_front(frame, x, y, include_stopped, minimize)
    if points.empty:
        return front.assign(on_front=True, candidate=True)
    points = points[points[x].notna() & points[y].notna()]
    free = verdicts.not_dominated(frame, points["point_key"].tolist(), x, y, list(minimize), include_stopped)
    out = points.assign(on_front=points["point_key"].isin(set(front["point_key"])),
                        candidate=points["point_key"].map(free).fillna(False).astype(bool))
    out = out[out["on_front"] | out["candidate"]]
    ascending = column_name(x) in {column_name(m) for m in minimize}
    return out.sort_values(x, ascending=ascending, kind="stable")


def place_labels(ax: plt.Axes, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                 fontsize: float = 7) -> list[Annotation]:
    """Label each point (data coordinates) so that no two labels overlap each other or a point.

    Greedy: for each point in turn, the first offset of :data:`LABEL_OFFSETS` (nearest first,
    joined to the point by a line beyond the nearest ring) whose box stays inside the axes and
    clear of every label placed and every point's marker; if none is clear, the one with the
    least overlap. Call after the layout is final (a later tight_layout moves the points).
    """
    renderer = ax.figure.canvas.get_renderer()
    centres = ax.transData.transform(np.c_[np.asarray(xs, float), np.asarray(ys, float)]) if len(xs) else []
    markers = [Bbox.from_bounds(cx - MARKER_PX, cy - MARKER_PX, 2 * MARKER_PX, 2 * MARKER_PX) for cx, cy in centres]
    placed: list[Bbox] = []
    labels = []
    for x, y, text in zip(xs, ys, texts):
        best, best_cost = None, None
        for dx, dy in LABEL_OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                              arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5} if max(abs(dx), abs(dy)) > 6
                              else None)
            box = ann.get_window_extent(renderer)
            cost = sum(_overlap(box, other) for other in placed + markers) + _outside(box, ax.bbox)
            if best is None or cost < best_cost:
                if best is not None:
                    best.remove()
                best, best_cost = ann, cost
            else:
                ann.remove()
            if cost == 0:
                break
        placed.append(best.get_window_extent(renderer))
        labels.append(best)
    return labels


def _overlap(a: Bbox, b: Bbox) -> float:
    """Area (pixels²) shared by two boxes."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _outside(box: Bbox, frame: Bbox) -> float:
    """Area (pixels²) of ``box`` outside ``frame``."""
    return box.width * box.height - _overlap(box, frame)


def _axis_values(values: pd.Series, metric: str) -> pd.Series:
    return values * 100 if metric in PERCENT else values


def error_bars(front: pd.DataFrame, metric: str) -> np.ndarray | None:
    """(2, n) distances below and above each point to its interval's ends, in axis units; None
    without interval columns (unknown ends draw no bar)."""
    if f"{metric}_lo" not in front.columns or f"{metric}_hi" not in front.columns:
        return None
    value = front[metric].to_numpy(float)
    lo, hi = front[f"{metric}_lo"].to_numpy(float), front[f"{metric}_hi"].to_numpy(float)
    scale = 100.0 if metric in PERCENT else 1.0
    err = np.stack([value - lo, hi - value]) * scale
    return np.nan_to_num(np.clip(err, 0, None), nan=0.0, posinf=0.0)


def interval_note(front: pd.DataFrame) -> str:
    """Which interval the error bars are: pooled over seeds (the training noise counted), or one
    run's own (the evaluation's only)."""
    kinds = set(front["interval"].dropna()) if "interval" in front.columns else set()
    if not kinds - {""}:
        return "no intervals logged"
    seeds = ("pooled over seeds (training noise counted)" if any(verdicts.SEEDS in k for k in kinds) else "")
    own = ("one run's own (evaluation noise only)" if any(verdicts.EVALUATION_ONLY in k for k in kinds) else "")
    return "bars: 95 % intervals, " + "; ".join(p for p in (seeds, own) if p)


def plot_front(frame: pd.DataFrame, front: pd.DataFrame, x: str, y: str, path: Path,
               include_stopped: bool = False, title: str = "") -> Path:
    """Scatter every trial; the point-estimate front highlighted with its 95 % intervals as error
    bars and joined by its staircase; the points no other separably dominates (``front`` rows with
    ``candidate``) marked beside it; each front or candidate point labelled by name without
    overlaps; writes a PNG. ``front``: :func:`fronts_with_noise` (or a plain front: all on it)."""
    fig, ax = plt.subplots(figsize=(7.6, 5.6), dpi=120)
    counted = completed(frame, include_stopped)
    others = frame[~counted & frame[x].notna() & frame[y].notna()]
    pool = frame[counted & frame[x].notna() & frame[y].notna()]
    if len(others):  # the legend lists only markers that appear
        ax.scatter(_axis_values(others[x], x), _axis_values(others[y], y), marker="x", color="0.7",
                   label="stopped / diverged / running trial", zorder=1)
    for loss, group in pool.groupby("loss", dropna=False, sort=True):
        ax.scatter(_axis_values(group[x], x), _axis_values(group[y], y), s=18, alpha=0.6, zorder=4,
                   label=(LOSS_NAMES[loss].short if loss in LOSS_NAMES else str(loss)) + " trial")
    on = front[front["on_front"]] if "on_front" in front.columns else front
    cand = front[front["candidate"] & ~front["on_front"]] if "candidate" in front.columns else front.iloc[:0]
    fx, fy = _axis_values(on[x], x), _axis_values(on[y], y)
    shown = pd.concat([on, cand])
    ax.errorbar(_axis_values(shown[x], x), _axis_values(shown[y], y), xerr=error_bars(shown, x),
                yerr=error_bars(shown, y), fmt="none", ecolor="crimson", alpha=0.35, lw=1, capsize=2, zorder=2)
    ax.plot(fx, fy, drawstyle="steps-post", color="crimson", lw=1, zorder=2)
    # Open rings drawn under the trials' dots, so a dot on the front stays visible inside its ring.
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="crimson", lw=1.5, zorder=3,
               label="front of the point estimates")
    if len(cand):
        ax.scatter(_axis_values(cand[x], x), _axis_values(cand[y], y), s=90, marker="D", facecolors="none",
                   edgecolors="darkorange", lw=1.3, zorder=3, label="also not separably dominated")
    values = [_axis_values(frame[c].dropna(), c) for c in (x, y)]
    for axis, v, c in ((ax.set_xlim, values[0], x), (ax.set_ylim, values[1], y)):
        if len(v):
            pad = max(0.08 * (v.max() - v.min()), 1.0 if c in PERCENT else 0.01)
            top = 100.0 if c in PERCENT else None  # a fraction's axis ends where the fraction does
            axis(v.min() - pad, min(v.max() + pad, top + 1) if top is not None else v.max() + pad)
    ax.set_xlabel(LABELS.get(x, x) + (" (lower is better)" if x in LOWER_IS_BETTER else ""))
    ax.set_ylabel(LABELS.get(y, y) + (" (lower is better)" if y in LOWER_IS_BETTER else ""))
    kind = f"{Status.FINISHED} or {Status.STOPPED}" if include_stopped else Status.FINISHED
    noun = "points" if "seeds" in front.columns and (front["seeds"] > 1).any() else "trials"
    n_points = frame[counted]["config_key"].nunique() if "config_key" in frame.columns else len(pool)
    candidates = int(front["candidate"].sum()) if "candidate" in front.columns else len(on)
    ax.set_title((title or f"Pareto front, {describe(frame)}: {len(on)} of {n_points} {noun} on the front of "
                  f"point estimates, {candidates} not separably dominated ({len(pool)} {kind} trials)")
                 + f"\n{interval_note(front)}", fontsize=8.5, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    place_labels(ax, _axis_values(shown[x], x).tolist(), _axis_values(shown[y], y).tolist(),
                 shown["run_name"].astype(str).tolist())  # a point's name, without its seed
    fig.savefig(path)
    plt.close(fig)
    return path


def front_text(front: pd.DataFrame, x: str, y: str) -> str:
    """The exported fronts as a text table: each number with its 95 % interval, ``0.750 [0.700, 0.800]``;
    the selection numbers under their own names, the confirmed ones (when logged) as ``confirmed ...``;
    ``front`` and ``candidate`` say which front a point is on."""
    def with_interval(col: str) -> pd.Series:
        ends = [f"{col}_lo", f"{col}_hi"]
        if not set(ends) <= set(front.columns):
            return front[col].map(lambda v: f"{v:.3f}")
        return pd.Series([f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{v:.3f}"
                          for v, lo, hi in zip(front[col], front[ends[0]], front[ends[1]])], index=front.index)

    shown = pd.DataFrame({c: front[c] for c in ("run_name", "status", "lam", "mu", "seeds") if c in front.columns})
    for flag, name in (("on_front", "front"), ("candidate", "candidate")):
        if flag in front.columns:
            shown[name] = front[flag].map({True: "yes", False: "-"})
    for col in dict.fromkeys((x, y, "objective", *CONFIRMED.values())):
        if col in front.columns and front[col].notna().any():
            shown[col.replace("confirm_", "confirmed ")] = with_interval(col)
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def write_pareto(frame: pd.DataFrame, out_dir: Path, x: str | None = None, y: str = "gan_test",
                 include_stopped: bool = False, minimize: Collection[str] | None = None,
                 stem: str = "") -> dict[str, Path]:
    """Compute the front over points and the candidate front (:func:`fronts_with_noise`) and write
    ``front.parquet``, ``front.csv`` (both fronts' points with ``on_front``/``candidate`` flags and
    interval columns) and ``pareto.png`` (with error bars).

    ``stem`` is put before each name (``stem + "front.csv"``) to keep variants apart;
    ``minimize=None`` minimizes the metrics that are better when smaller; ``x=None`` is the
    accuracy the trials selected by.
    """
    xc, yc = front_axes(frame, x, y)
    minimize = default_minimize(xc, yc) if minimize is None else minimize
    front = fronts_with_noise(frame, xc, yc, include_stopped=include_stopped, minimize=minimize)
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
