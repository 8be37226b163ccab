"""The paper's Table 2: score-matching trials on a λ × μ grid, as text, CSV and a heatmap.

Rows are λ and columns μ, largest first (the paper: λ 1e-2 at the top down to 1e-6, μ 1e-2 on
the left to 1e-5). A cell reads ``acc% / GAN-test%`` over the finished trials with that λ, μ:
one trial gives the values, several seeds give ``mean ± std`` and ``n``. Cells with no finished
trial say why (``diverged``, ``stopped``, ...); cells never run stay blank. Trials of other
losses (baseline, gradient norm, anti-score-matching) are not grid cells: they are listed in a
caption under the table.

The cells report test accuracy (reported for every trial, never used to choose). Trials that
selected on different splits or whose GAN-test came from different judges are refused
(:func:`analysis.runs.check_comparable`); trials that selected on the test set (the paper's
full-training-set setting) get a loud line in the caption. Coloured by the relative Fisher
divergence, each cell also shows the floor eq. 4 can reach for its μ
(``eval/fisher_divergence_rel_floor``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.runs import (CONFIRMED, LABELS, LOWER_IS_BETTER, PERCENT, AnalysisError, check_comparable, completed,
                           describe, interval_of, metric_column, selection_notice)
from trainer.stats import Interval, not_separable_from
from sweep.record import LOSS_NAMES, SelectionSplit, Status

GRID_LOSS = "score_matching"
FLOOR = {"fisher_divergence_rel": "fisher_divergence_rel_floor"}  # metric -> the column of its reachable best
PAPER_LAMS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # Table 2 rows, top to bottom
PAPER_MUS = (1e-2, 1e-3, 1e-4, 1e-5)  # Table 2 columns, left to right
MAX_AXIS = 12  # distinct λ or μ values beyond which the trials are no grid (e.g. Optuna samples)
INCOMPLETE = "incomplete"  # shown for "finished" with fewer epochs than configured
# Why a cell has no value, most telling first (trials still finished elsewhere are not listed).
_EMPTY_ORDER = (Status.DIVERGED, Status.STOPPED, INCOMPLETE, Status.FAILED, Status.RUNNING)
_NOT_DONE = (Status.DIVERGED, Status.STOPPED, Status.FAILED)  # counted beside a cell's values


def _fmt(rows: pd.DataFrame, column: str, percent: bool) -> str:
    """``75.65 ± 2.10%``: the value (mean over seeds when several) ± the half-width of its 95 %
    interval (:func:`analysis.runs.interval_of`); ``75.65%`` when no interval was logged; ``–``
    when no value was."""
    interval, _ = interval_of(rows, column)
    scale, unit, digits = (100, "%", 2) if percent else (1, "", 3)
    if not np.isfinite(interval.value):
        return "–"
    if not np.isfinite(interval.half_width):
        return f"{interval.value * scale:.{digits}f}{unit}"
    return f"{interval.value * scale:.{digits}f} ± {interval.half_width * scale:.{digits}f}{unit}"


def _cell_text(group: pd.DataFrame, done: pd.DataFrame) -> str:
    counts = group["status"].value_counts()
    if done.empty:
        # "finished" with fewer epochs than configured: cut short without being marked stopped.
        counts = counts.rename({Status.FINISHED: INCOMPLETE})
        return ", ".join(s if counts[s] == 1 else f"{s} ×{counts[s]}" for s in _EMPTY_ORDER if s in counts)
    text = f"{_fmt(done, 'test_acc', True)} / {_fmt(done, 'gan_test', True)}"
    if len(done) > 1:
        text += f" (n={len(done)})"
    failed = [f"{counts[s]} {s}" for s in _NOT_DONE if s in counts]
    text += f" [{', '.join(failed)}]" if failed else ""
    # Re-scored on fresh draws (sweep confirmation), beside the numbers that selected.
    confirmed = [c for c in ("confirm_test_acc", "confirm_gan_test") if c in done.columns and done[c].notna().any()]
    if confirmed:
        text += f"; confirmed {_fmt(done, 'confirm_test_acc', True)} / {_fmt(done, 'confirm_gan_test', True)}"
    return text


def cell_stats(frame: pd.DataFrame, metric: str = "objective") -> pd.DataFrame:
    """One row per (λ, μ) cell of the score-matching trials: counts, means, intervals and the cell text.

    Columns: ``lam, mu, n, n_diverged, n_stopped, n_failed, n_running``, then for test_acc,
    gan_test, ``metric`` (and the confirmed numbers when logged) ``<col>_mean, <col>_std, <col>_lo,
    <col>_hi, <col>_interval`` (which interval: Student's t over seeds, or one run's own), and
    ``text``. Means are over the finished trials; std is NaN for a single trial.
    """
    column = metric_column(frame, metric)
    grid = frame[frame["loss"] == GRID_LOSS]
    if grid.empty:
        losses = ", ".join(sorted(frame["loss"].dropna().astype(str).unique())) or "none"
        raise AnalysisError(f"no score-matching trials to put on the λ × μ grid (losses present: {losses})")
    size = grid["lam"].nunique(), grid["mu"].nunique()
    if max(size) > MAX_AXIS:
        raise AnalysisError(f"the trials' λ, μ are not a grid ({size[0]} λ and {size[1]} μ values, "
                            f"at most {MAX_AXIS} each); an Optuna search reads better as a Pareto front")
    ok = completed(grid)
    rows = []
    for (lam, mu), group in grid.groupby(["lam", "mu"], sort=False):
        done = group[ok[group.index]]
        row = {"lam": lam, "mu": mu, "n": len(done)}
        for status in (*_NOT_DONE, Status.RUNNING):
            row[f"n_{status}"] = int((group["status"] == status).sum())
        floor = [FLOOR[column]] if column in FLOOR and FLOOR[column] in grid.columns else []
        for col in dict.fromkeys(["test_acc", "gan_test", column, *floor, *CONFIRMED.values()]):
            if col not in done.columns:
                continue
            row[f"{col}_mean"] = done[col].mean()
            row[f"{col}_std"] = done[col].std(ddof=1) if len(done) > 1 else np.nan
            interval, row[f"{col}_interval"] = interval_of(done, col)
            row[f"{col}_lo"], row[f"{col}_hi"] = interval.lo, interval.hi
        row["text"] = _cell_text(group, done)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["lam", "mu"], ascending=False, ignore_index=True)


BEST, NOT_SEPARABLE = "best", "not separable"  # a cell's mark in the heatmap and table2.md


def separability(stats: pd.DataFrame, column: str) -> pd.Series:
    """Per cell of :func:`cell_stats`: ``best`` for the best mean of ``column`` (smallest for a
    minimized metric), ``not separable`` where the cell's 95 % interval overlaps the best's, else
    ``""``. Nothing is marked with fewer than two cells, or when the best cell has no finite
    interval (trials logged before intervals): a ranking needs one."""
    marks = pd.Series("", index=stats.index, dtype=object)
    means = stats[f"{column}_mean"]
    if means.notna().sum() < 2 or f"{column}_lo" not in stats.columns:
        return marks
    best = means.idxmin() if column in LOWER_IS_BETTER else means.idxmax()
    intervals = {i: Interval(r[f"{column}_mean"], r[f"{column}_lo"], r[f"{column}_hi"])
                 for i, r in stats.iterrows() if np.isfinite(r[f"{column}_mean"])}
    if not np.isfinite([intervals[best].lo, intervals[best].hi]).all():
        return marks
    marks[best] = BEST
    others = {i: iv for i, iv in intervals.items() if i != best}
    marks[not_separable_from(intervals[best], others)] = NOT_SEPARABLE
    return marks


def separability_note(stats: pd.DataFrame, column: str) -> str | None:
    """``Best cell by objective: λ=…, μ=…, 0.700 [0.650, 0.750]; not separable from it …``."""
    marks = separability(stats, column)
    if not (marks == BEST).any():
        several = stats[f"{column}_mean"].notna().sum() > 1
        return f"No interval of {column} was logged, so the cells are not ranked" if several else None
    cell = lambda row: f"λ={_label(row['lam'])} μ={_label(row['mu'])}"  # noqa: E731
    best = stats[marks == BEST].iloc[0]
    note = (f"Best cell by {column}: {cell(best)}, {best[f'{column}_mean']:.3f} "
            f"[{best[f'{column}_lo']:.3f}, {best[f'{column}_hi']:.3f}]")
    close = [cell(row) for _, row in stats[marks == NOT_SEPARABLE].iterrows()]
    return note + ("; not separable from it (95 % intervals overlap, so not ranked): " + ", ".join(close)
                   if close else "; every other cell's 95 % interval lies apart from it")


def _axes(stats: pd.DataFrame, axes: str) -> tuple[list[float], list[float]]:
    lams = sorted(stats["lam"].unique(), reverse=True)
    mus = sorted(stats["mu"].unique(), reverse=True)
    if axes == "paper":
        lams = sorted(set(lams) | set(PAPER_LAMS), reverse=True)
        mus = sorted(set(mus) | set(PAPER_MUS), reverse=True)
    return lams, mus


def table2_frame(frame: pd.DataFrame, metric: str = "objective",
                 axes: Literal["present", "paper"] = "present") -> pd.DataFrame:
    """Table 2 as text: index λ (descending), columns μ (descending), cells ``acc% / GAN-test%``.

    ``axes="present"`` uses the λ and μ values the trials have; ``"paper"`` adds the paper's
    grid so that cells not run show blank. Empty strings mark cells with no trial.
    """
    return _text_table(cell_stats(frame, metric), axes)


def _text_table(stats: pd.DataFrame, axes: str) -> pd.DataFrame:
    lams, mus = _axes(stats, axes)
    table = stats.pivot(index="lam", columns="mu", values="text").reindex(index=lams, columns=mus)
    table.index.name, table.columns.name = "λ", "μ"
    return table.fillna("")


def table2_values(frame: pd.DataFrame, metric: str = "objective",
                  axes: Literal["present", "paper"] = "present") -> pd.DataFrame:
    """The mean of ``metric`` per cell, oriented as :func:`table2_frame` (NaN: no finished trial)."""
    return _value_table(cell_stats(frame, metric), metric_column(frame, metric), axes)


def _value_table(stats: pd.DataFrame, column: str, axes: str) -> pd.DataFrame:
    lams, mus = _axes(stats, axes)
    table = stats.pivot(index="lam", columns="mu", values=f"{column}_mean").reindex(index=lams, columns=mus)
    table.index.name, table.columns.name = "λ", "μ"
    return table


def caption(frame: pd.DataFrame) -> list[str]:
    """One line per non-grid loss present: ``baseline: 78.01% / 59.47%`` (same cell format)."""
    lines = []
    for kind, names in LOSS_NAMES.items():
        name = names.short
        if kind == GRID_LOSS:
            continue
        group = frame[frame["loss"] == kind]
        if group.empty:
            continue
        done = group[completed(group)]
        text = _cell_text(group, done)
        if kind != "ce":
            lams = ", ".join(f"{v:.0e}" for v in sorted(group["lam"].unique()))
            name += f" (λ={lams})"
        lines.append(f"{name}: {text}")
    return lines


def _label(value: float) -> str:
    return f"{value:.0e}" if value else "0"


def markdown_table(table: pd.DataFrame) -> list[str]:
    """The lines of a Markdown table of ``table``'s columns (pandas' own needs ``tabulate``)."""
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return lines


def to_markdown(table: pd.DataFrame, notes: list[str]) -> str:
    """Table 2 as a Markdown table, caption lines below."""
    shown = table.copy()
    shown.columns = [_label(m) for m in table.columns]
    shown.insert(0, "λ ↓ / μ →", [f"**{_label(lam)}**" for lam in table.index])
    lines = markdown_table(shown) + [""]
    lines.append("Cells: test accuracy % / GAN-test % (the GAN-test that selected) over finished trials, each ± the "
                 "half-width of its 95 % interval: for one seed the run's own (Wilson over the test images or the "
                 "samples), for n seeds the mean with Student's t over the seeds. \"confirmed\": re-scored on fresh "
                 "draws after selection. Cells whose intervals overlap are not separable and not ranked.")
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def _colour_note(metric: str, split: str | None = None) -> str:
    """What the colour shows, defined where it is used (the heatmap's second title line); for the
    objective, the split it read (``split``: val, test, or None for untagged trials)."""
    if metric == "objective":
        read = {SelectionSplit.VAL: "validation", SelectionSplit.TEST: "test"}.get(split, "test (untagged trials)")
        return ("colour: objective (eval/objective), the sweep's selection score\n"
                f"read on the {read} split (its accuracy and GAN-test, or one ground-truth metric); higher is better")
    return f"colour: {LABELS.get(metric, metric)}" + ("; lower is better" if metric in LOWER_IS_BETTER else "")


def plot_heatmap(text: pd.DataFrame, values: pd.DataFrame, metric: str, path: Path,
                 notes: list[str] = (), title: str = "", floor: pd.DataFrame | None = None,
                 half: pd.DataFrame | None = None, marks: pd.DataFrame | None = None,
                 split: str | None = None) -> Path:
    """Annotated heatmap: colour = mean ``metric`` per cell, text = the Table 2 cell; ``floor``
    (same layout as ``values``) is the best value of ``metric`` reachable per cell, shown beside it;
    ``half`` the half-width of each cell's 95 % interval (shown as ±); ``marks`` outlines the best
    cell (solid) and those not separable from it (dashed) (:func:`separability`); ``split`` the
    split the objective read, named in the title."""
    shown = values.to_numpy(float) * (100 if metric in PERCENT else 1)
    rows, cols = shown.shape
    fig, ax = plt.subplots(figsize=(max(2.3 * cols + 2.2, 6.4), 0.9 * rows + 2.2 + 0.3 * len(notes)), dpi=120)
    # Brighter is better: reverse the colour map for metrics minimized.
    # Light grey: cells without a finished trial.
    cmap = plt.get_cmap("viridis_r" if metric in LOWER_IS_BETTER else "viridis").with_extremes(bad="0.92")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, aspect="auto")
    finite = shown[np.isfinite(shown)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(rows):
        for j in range(cols):
            cell = text.iat[i, j]
            if metric not in ("test_acc", "gan_test") and np.isfinite(shown[i, j]):
                cell += f"\n{metric} {shown[i, j]:.3g}"
                if half is not None and np.isfinite(half.iat[i, j]):
                    cell += f" ± {half.iat[i, j] * (100 if metric in PERCENT else 1):.2g}"
                if floor is not None and np.isfinite(floor.iat[i, j]):
                    cell += f"\n(floor {floor.iat[i, j]:.3g})"
            dark = np.isfinite(shown[i, j]) and (shown[i, j] < middle) != (metric in LOWER_IS_BETTER)
            mark = "" if marks is None else marks.iat[i, j]
            if mark:
                cell += "\n(best)" if mark == BEST else "\n(not separable from best)"
                ax.add_patch(plt.Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="crimson",
                                           lw=2 if mark == BEST else 1.2, ls="-" if mark == BEST else "--"))
            ax.text(j, i, cell.replace(" (n=", "\n(n=").replace(" [", "\n[").replace("; confirmed", "\nconfirmed"),
                    ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(cols), [_label(m) for m in values.columns])
    ax.set_yticks(range(rows), [_label(lam) for lam in values.index])
    ax.set_xlabel("μ")
    ax.set_ylabel("λ")
    fig.colorbar(image, ax=ax, label=LABELS.get(metric, metric)
                 + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    title = title or "Table 2: test accuracy % / GAN-test % per λ, μ"
    outline = ("\noutlined: best cell (solid), cells not separable from it (dashed; 95 % intervals overlap)"
               if marks is not None and (marks == BEST).to_numpy().any() else "")
    ax.set_title(f"{title}\n{_colour_note(metric, split)}{outline}", fontsize=9)
    if notes:
        # The caption under the heatmap: selection notice, best cell and those not separable from
        # it, trials outside the grid (the baseline, other losses).
        fig.text(0.5, 0.015, "\n".join(notes), fontsize=8, ha="center", va="bottom",
                 wrap=True, bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.8"})
        fig.tight_layout(rect=(0, 0.045 * len(notes) + 0.05, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_table2(frame: pd.DataFrame, out_dir: Path, metric: str = "objective",
                 axes: Literal["present", "paper"] = "present", stem: str = "") -> dict[str, Path]:
    """Write ``table2.png`` (heatmap coloured by ``metric``), ``table2.md`` and ``table2.csv``.

    The CSV holds :func:`cell_stats` (one row per cell, numbers and text). ``stem`` is put
    before each file name to keep variants apart.
    """
    split = check_comparable(frame, gan_test=True)
    column = metric_column(frame, metric)
    stats = cell_stats(frame, column)
    text, values = _text_table(stats, axes), _value_table(stats, column, axes)
    floor = _value_table(stats, FLOOR[column], axes) if f"{FLOOR.get(column)}_mean" in stats.columns else None
    if floor is not None:  # the measured value beside what eq. 4 can reach, in the Markdown too
        for lam in text.index:
            for mu in text.columns:
                if text.at[lam, mu] and np.isfinite(values.at[lam, mu]) and np.isfinite(floor.at[lam, mu]):
                    text.at[lam, mu] += f"; {column} {values.at[lam, mu]:.3g} (floor {floor.at[lam, mu]:.3g})"
    marks = separability(stats, column)
    for lam, mu, mark in zip(stats["lam"], stats["mu"], marks):
        if mark and text.at[lam, mu]:
            text.at[lam, mu] += " **(best)**" if mark == BEST else " (not separable from best)"
    notice = selection_notice(split)
    separable = separability_note(stats, column)
    notes = ([notice] if notice else []) + ([separable] if separable else []) + caption(frame)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (f"{stem}table2.png", f"{stem}table2.md", f"{stem}table2.csv")}
    title = f"Table 2, {describe(frame)}: test accuracy % / GAN-test % (± half-width of the 95 % interval)"
    # The heatmap adds the metric and its floor to each cell itself.
    off_grid = caption(frame)
    shown = notes[: len(notes) - len(off_grid)] + (["Not in the grid — " + "; ".join(off_grid)] if off_grid else [])
    wrapped = [line for note in shown for line in textwrap.wrap(note, 120)]
    half = _value_table(stats.assign(**{f"{column}_half_mean": (stats[f"{column}_hi"] - stats[f"{column}_lo"]) / 2}),
                        f"{column}_half", axes) if f"{column}_lo" in stats.columns else None
    mark_table = _text_table(stats.assign(text=marks), axes)
    plot_heatmap(_text_table(stats, axes), values, column, paths[f"{stem}table2.png"], wrapped, title, floor,
                 half=half, marks=mark_table, split=split)
    paths[f"{stem}table2.md"].write_text(to_markdown(text, notes))
    stats.to_csv(paths[f"{stem}table2.csv"], index=False)
    return paths
