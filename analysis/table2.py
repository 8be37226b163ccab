"""The paper's Table 2: score-matching trials on a λ × μ grid, as text, CSV and a heatmap.

Rows are λ and columns μ, largest first (the paper: λ 1e-2 at the top down to 1e-6, μ 1e-2 on
the left to 1e-5). A cell reads ``acc% [lo, hi] / GAN-test% [lo, hi] (n=…)``: test accuracy and
GAN-test, each the mean over the cell's seeds with its 95 % interval. Every seed that ended counts
(:mod:`analysis.verdicts`): a diverged seed at the objective's worst value, 0, and the cell then
says ``k/n finished``, so a cell whose seeds partly diverged does not look better than it is.
With a pooled run-to-run variance (points with ≥ 2 seeds: several search seeds, or the
confirmation's retrains) every interval is x̄ ± t·s/√n and counts the training seed's noise;
without one, a one-seed cell shows its run's own interval, which covers the evaluation only, and
the caption says so. Cells with no trial that ended say why (``stopped``, ``failed``, ...); cells
never run stay blank. Trials of other losses (baseline, gradient norm, anti-score-matching) are
not grid cells: they are listed in a caption under the table.

The best cell is the sweep's best point when the sweep named one (its parent run's
``sweep.best_run``: the confirmed best), else the best mean of the colour metric, labelled which.
Cells are marked "not separable" from it by the 95 % interval of their difference (pooled, or
paired over the items both runs were scored on), Holm-corrected over every pair of cells.

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

from analysis import verdicts
from analysis.runs import (CONFIRMED, LABELS, LOWER_IS_BETTER, PERCENT, AnalysisError, check_comparable, describe,
                           metric_column, selection_notice)
from sweep.record import LOSS_NAMES, SelectionSplit, Status
from trainer.pooled import Pooled

GRID_LOSS = "score_matching"
FLOOR = {"fisher_divergence_rel": "fisher_divergence_rel_floor"}  # metric -> the column of its reachable best
PAPER_LAMS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # Table 2 rows, top to bottom
PAPER_MUS = (1e-2, 1e-3, 1e-4, 1e-5)  # Table 2 columns, left to right
MAX_AXIS = 12  # distinct λ or μ values beyond which the trials are no grid (e.g. Optuna samples)
INCOMPLETE = "incomplete"  # shown for "finished" with fewer epochs than configured
# Why a cell has no value, most telling first.
_EMPTY_ORDER = (Status.STOPPED, INCOMPLETE, Status.FAILED, Status.RUNNING)
_NOT_COUNTED = (Status.STOPPED, Status.FAILED)  # counted beside a cell's values, not in them
BEST, NOT_SEPARABLE = "best", "not separable"  # a cell's mark in the heatmap and table2.md


def _number(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}%" if percent else f"{value:.3f}"


def _span(lo: float, hi: float, percent: bool) -> str:
    scale, digits = (100, 1) if percent else (1, 3)
    return f"[{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def value_text(mean: float, lo: float, hi: float, percent: bool) -> str:
    """``75.7% [73.2, 78.0]``: a value with its 95 % interval's ends (as wide as they are: an
    interval at 0 % or 100 % is not symmetric); the value alone when no interval was logged; ``–``
    when no value."""
    if not np.isfinite(mean):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _number(mean, percent)
    return f"{_number(mean, percent)} {_span(lo, hi, percent)}"


def _pools(frame: pd.DataFrame, columns: list[str]) -> dict[str, Pooled]:
    return verdicts.pooled_all(frame, tuple(columns))


def _cell_text(row: dict) -> str:
    """The Table 2 text of one :func:`cell_stats` row."""
    if row["n"] == 0:
        return row["why"]
    text = " / ".join(value_text(row[f"{c}_mean"], row[f"{c}_lo"], row[f"{c}_hi"], True)
                      for c in ("test_acc", "gan_test"))
    text += f" ({row['n_finished']}/{row['n']} finished)" if row["n_finished"] < row["n"] else f" (n={row['n']})"
    skipped = [f"{row[f'n_{s}']} {s}" for s in (*_NOT_COUNTED, Status.RUNNING) if row[f"n_{s}"]]
    text += f" [{', '.join(skipped)}]" if skipped else ""
    if np.isfinite(row.get("confirm_test_acc_mean", np.nan)):
        parts = " / ".join(value_text(row[f"{c}_mean"], row[f"{c}_lo"], row[f"{c}_hi"], True)
                           for c in ("confirm_test_acc", "confirm_gan_test"))
        text += f"; confirmed {parts} (n={row['confirm_n']})"
    return text


def _confirmed_rows(group: pd.DataFrame) -> pd.DataFrame:
    """The runs whose confirmed numbers a cell reports: a finalist's retrains (its new seeds) when it
    was retrained, never its own selected run beside them; else the runs confirmed."""
    retrains = group[group["retrain"].fillna(False).astype(bool)] if "retrain" in group.columns else group.iloc[:0]
    return retrains if len(retrains) else group


def cell_stats(frame: pd.DataFrame, metric: str = "objective") -> pd.DataFrame:
    """One row per (λ, μ) cell of the score-matching trials: counts, means, intervals and the cell text.

    Columns: ``lam, mu, n`` (seeds that ended: finished or diverged), ``n_finished, n_diverged,
    n_stopped, n_failed, n_running``, then for test_acc, gan_test, ``metric`` (and the confirmed
    numbers when logged) ``<col>_mean, <col>_std, <col>_lo, <col>_hi, <col>_interval`` (which
    interval: pooled over seeds, or the evaluation's only), ``confirm_n``, ``why`` (no value: the
    statuses) and ``text``. Means are over every seed that ended, diverged ones at the worst value.
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
    floor = [FLOOR[column]] if column in FLOOR and FLOOR[column] in grid.columns else []
    columns = list(dict.fromkeys(["test_acc", "gan_test", column, *floor]))
    confirmed_cols = [c for c in CONFIRMED.values() if c in grid.columns and grid[c].notna().any()]
    pools = _pools(frame, columns + confirmed_cols)
    rows = [{"lam": lam, "mu": mu, **_group_stats(group, columns, confirmed_cols, pools)}
            for (lam, mu), group in grid.groupby(["lam", "mu"], sort=False)]
    return pd.DataFrame(rows).sort_values(["lam", "mu"], ascending=False, ignore_index=True)


def _group_stats(group: pd.DataFrame, columns: list[str], confirmed_cols: list[str],
                 pools: dict[str, Pooled]) -> dict:
    """The :func:`cell_stats` row of one point's trials (its seeds)."""
    counted = verdicts.ended(group)
    row: dict = {"n": len(counted), "n_finished": int((counted["status"] == Status.FINISHED).sum()),
                 "n_diverged": int((counted["status"] == Status.DIVERGED).sum())}
    for status in (*_NOT_COUNTED, Status.RUNNING):
        row[f"n_{status}"] = int((group["status"] == status).sum())
    confirmed_here = [c for c in confirmed_cols if group[c].notna().any()]  # a cell nobody confirmed has none
    for col, rows_ in [*((c, group) for c in columns), *((c, _confirmed_rows(group)) for c in confirmed_here)]:
        values = verdicts.seed_values(rows_, col)
        interval, kind = verdicts.estimate(rows_, col, pools.get(col))
        row[f"{col}_mean"], row[f"{col}_lo"], row[f"{col}_hi"] = interval.value, interval.lo, interval.hi
        row[f"{col}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
        row[f"{col}_interval"] = kind
    confirmed = verdicts.seed_values(_confirmed_rows(group), "confirm_test_acc") if confirmed_here else []
    row["confirm_n"] = len(confirmed)
    counts = group["status"].value_counts().rename({Status.FINISHED: INCOMPLETE})  # finished, cut short
    row["why"] = ", ".join(s if counts[s] == 1 else f"{s} ×{counts[s]}" for s in _EMPTY_ORDER if s in counts)
    row["text"] = _cell_text(row)
    return row


def cell_verdict(frame: pd.DataFrame, column: str, best_run: str | None = None):
    """The cells against the best (:func:`analysis.verdicts.versus_best`), keyed by (λ, μ): the best
    is the cell of ``best_run`` (the sweep's best point) when it is in the grid, else the best mean
    of ``column``. None when fewer than two cells have a value."""
    grid = frame[frame["loss"] == GRID_LOSS]
    groups = {key: g for key, g in grid.groupby(["lam", "mu"], sort=False)}
    best = None
    if best_run is not None and best_run in set(grid["run_id"]):
        row = grid[grid["run_id"] == best_run].iloc[0]
        best = (row["lam"], row["mu"])
    pool = verdicts.pooled_of(frame, column)
    return verdicts.versus_best(groups, column, pool, best=best, minimize=column in LOWER_IS_BETTER)


def separability(frame: pd.DataFrame, stats: pd.DataFrame, column: str, best_run: str | None = None) -> pd.Series:
    """Per cell of :func:`cell_stats`: ``best``, ``not separable`` (the interval of its difference
    from the best holds 0, Holm over every pair), or ``""``. Nothing with fewer than two cells."""
    marks = pd.Series("", index=stats.index, dtype=object)
    verdict = cell_verdict(frame, column, best_run)
    if verdict is None:
        return marks
    index = {(lam, mu): i for i, (lam, mu) in enumerate(zip(stats["lam"], stats["mu"]))}
    marks[index[verdict.best]] = BEST
    for key in verdict.not_separable():
        marks[index[key]] = NOT_SEPARABLE
    return marks


def _cell(lam: float, mu: float) -> str:
    return f"λ={_label(lam)} μ={_label(mu)}"


def separability_note(frame: pd.DataFrame, stats: pd.DataFrame, column: str, best_run: str | None = None) -> str | None:
    """``Best cell by objective: λ=…, μ=…, 0.700 [0.650, 0.750]; not separable from it …``."""
    verdict = cell_verdict(frame, column, best_run)
    if verdict is None:
        return None
    best = stats.set_index(["lam", "mu"]).loc[verdict.best]
    which = ("the sweep's best point (its confirmation)" if best_run is not None and best_run in set(frame["run_id"])
             else f"the best mean {column}")
    note = (f"Best cell ({which}): {_cell(*verdict.best)}, {column} "
            f"{value_text(best[f'{column}_mean'], best[f'{column}_lo'], best[f'{column}_hi'], column in PERCENT)}")
    close = [_cell(*key) for key in verdict.not_separable()]
    test = f"the 95 % interval of the difference holds 0, Holm over {verdict.family} pairs of cells"
    return note + (f"; not separable from it ({test}): " + ", ".join(close) if close
                   else f"; every other cell is separable from it ({test.replace('holds', 'excludes')})")


def noise_note(stats: pd.DataFrame, column: str) -> str:
    """What the intervals cover: the training seed's noise (pooled) or the evaluation's only."""
    kinds = set(stats.get(f"{column}_interval", pd.Series(dtype=object)).dropna()) - {""}
    if verdicts.SEEDS in kinds:
        return ("Intervals: the mean over each cell's seeds ± t·s/√n, s the run-to-run sd pooled over the points "
                "with several seeds (the training seed's noise counted); a diverged seed counts as 0")
    return ("Intervals: each cell has one training seed and no point has two, so they cover the evaluation's "
            "noise only (images and samples), not the training seed's")


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
    """One line per non-grid loss present: ``baseline: 76.0% [71.9, 79.7] / 60.0% [51.3, 68.1] (n=1)``
    (the cell format, the same intervals)."""
    columns = ["test_acc", "gan_test"]
    confirmed_cols = [c for c in CONFIRMED.values() if c in frame.columns and frame[c].notna().any()]
    pools = _pools(frame, columns + confirmed_cols)
    lines = []
    for kind, names in LOSS_NAMES.items():
        name = names.short
        if kind == GRID_LOSS:
            continue
        group = frame[frame["loss"] == kind]
        if group.empty:
            continue
        text = _group_stats(group, columns, confirmed_cols, pools)["text"]
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
    lines.append("Cells: test accuracy % / GAN-test % (the GAN-test that selected), each the mean over the cell's "
                 "seeds with its 95 % interval; n seeds that ended, a diverged one counted as 0 (k/n finished). "
                 "\"confirmed\": re-scored on fresh draws after selection (a retrained finalist: its new seeds only). "
                 "Whether two cells differ is decided by the interval of their difference, never by overlap.")
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


NOTE_PT = 7.5  # font size of the caption panel


def figure_width(columns: int) -> float:
    """The heatmap's width in inches for ``columns`` μ values (2 in a cell, room for the colour bar)."""
    return max(2.0 * columns + 2.4, 7.0)


def line_chars(width_in: float, points: float) -> int:
    """Characters of DejaVu Sans at ``points`` that fit a line ``width_in`` inches wide (an average
    glyph is about 0.6 em), less a margin."""
    return int(width_in * 72 / (0.6 * points)) - 4


def _cell_lines(row: dict, metric: str, percent: bool, floor: float, mark: str) -> list[str]:
    """The heatmap's text of one cell, a part per line."""
    if row["n"] == 0:
        return [row["why"]]
    lines = [value_text(row["test_acc_mean"], row["test_acc_lo"], row["test_acc_hi"], True),
             "/ " + value_text(row["gan_test_mean"], row["gan_test_lo"], row["gan_test_hi"], True),
             f"{row['n_finished']}/{row['n']} finished" if row["n_finished"] < row["n"] else f"n={row['n']}"]
    if metric not in ("test_acc", "gan_test") and np.isfinite(row[f"{metric}_mean"]):
        shown = value_text(row[f"{metric}_mean"], row[f"{metric}_lo"], row[f"{metric}_hi"], percent)
        lines.append(f"{metric} {shown}" + (f" (floor {floor:.3f})" if np.isfinite(floor) else ""))
    if np.isfinite(row.get("confirm_test_acc_mean", np.nan)):
        lines.append("confirmed " + value_text(row["confirm_test_acc_mean"], row["confirm_test_acc_lo"],
                                               row["confirm_test_acc_hi"], True))
        lines.append("/ " + value_text(row.get("confirm_gan_test_mean", np.nan), row.get("confirm_gan_test_lo", np.nan),
                                       row.get("confirm_gan_test_hi", np.nan), True) + f" (n={row['confirm_n']})")
    if mark:
        lines.append("(best)" if mark == BEST else "(not separable)")
    return lines


def plot_heatmap(stats: pd.DataFrame, values: pd.DataFrame, metric: str, path: Path,
                 notes: list[str] = (), title: str = "", marks: pd.Series | None = None,
                 split: str | None = None) -> Path:
    """Annotated heatmap: colour = mean ``metric`` per cell (``values``, laid out as Table 2), text =
    the cell of ``stats`` (:func:`cell_stats`) a part per line; ``marks`` (per row of ``stats``)
    outlines the best cell (solid) and those not separable from it (dashed); ``notes`` go under the
    heatmap in a panel of their own; ``split`` the split the objective read, named in the title."""
    percent = metric in PERCENT
    shown = values.to_numpy(float) * (100 if percent else 1)
    rows, cols = shown.shape
    by_cell = {(r["lam"], r["mu"]): (r, "" if marks is None else marks.iat[i]) for i, r in stats.iterrows()}
    floor_col = f"{FLOOR.get(metric)}_mean"

    def lines_of(lam: float, mu: float) -> list[str]:
        row, mark = by_cell.get((lam, mu), (None, ""))
        return [] if row is None else _cell_lines(row, metric, percent, row.get(floor_col, np.nan), mark)

    texts = [[lines_of(lam, mu) for mu in values.columns] for lam in values.index]
    most = max((len(t) for line in texts for t in line), default=1)
    cell_h = 0.13 * most + 0.25  # inches: a line of 6.5 pt text is about 0.12 in
    width = figure_width(cols)
    note_h = 0.16 * len(notes) + (0.25 if notes else 0)
    map_h = cell_h * rows + 1.6  # title lines and axis labels
    fig = plt.figure(figsize=(width, map_h + note_h), dpi=120, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[map_h, max(note_h, 1e-3)]) if notes else (fig, None)
    ax = top.subplots()
    # Brighter is better: reverse the colour map for metrics minimized. Light grey: no value.
    cmap = plt.get_cmap("viridis_r" if metric in LOWER_IS_BETTER else "viridis").with_extremes(bad="0.92")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, aspect="auto")
    finite = shown[np.isfinite(shown)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i, lam in enumerate(values.index):
        for j, mu in enumerate(values.columns):
            mark = by_cell.get((lam, mu), (None, ""))[1]
            if mark:
                ax.add_patch(plt.Rectangle((j - 0.49, i - 0.49), 0.98, 0.98, fill=False, edgecolor="crimson",
                                           lw=2 if mark == BEST else 1.2, ls="-" if mark == BEST else "--"))
            dark = np.isfinite(shown[i, j]) and (shown[i, j] < middle) != (metric in LOWER_IS_BETTER)
            ax.text(j, i, "\n".join(texts[i][j]), ha="center", va="center", fontsize=6.5,
                    color="white" if dark else "black", linespacing=1.15)
    ax.set_xticks(range(cols), [_label(m) for m in values.columns])
    ax.set_yticks(range(rows), [_label(lam) for lam in values.index])
    ax.set_xlabel("μ")
    ax.set_ylabel("λ")
    top.colorbar(image, ax=ax, label=LABELS.get(metric, metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    title = title or "Table 2: test accuracy % / GAN-test % per λ, μ"
    outline = ("outlined: the best cell (solid) and the cells not separable from it (dashed: the 95 % interval of "
               "their difference holds 0)" if marks is not None and (marks == BEST).any() else "")
    lines = [title, *_colour_note(metric, split).split("\n"), outline]
    chars = line_chars(width, 8.5)
    top.suptitle("\n".join(part for line in lines if line for part in textwrap.wrap(line, chars)), fontsize=8.5)
    if bottom is not None:
        # The caption under the heatmap, in a panel sized to its lines: selection notice, best cell
        # and those not separable from it, what the intervals cover, trials outside the grid.
        bottom.text(0.01, 0.97, "\n".join(notes), fontsize=NOTE_PT, ha="left", va="top",
                    bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.8"})
    fig.savefig(path)
    plt.close(fig)
    return path


def write_table2(frame: pd.DataFrame, out_dir: Path, metric: str = "objective",
                 axes: Literal["present", "paper"] = "present", stem: str = "",
                 best_run: str | None = None) -> dict[str, Path]:
    """Write ``table2.png`` (heatmap coloured by ``metric``), ``table2.md`` and ``table2.csv``.

    The CSV holds :func:`cell_stats` (one row per cell, numbers and text). ``stem`` is put
    before each file name to keep variants apart; ``best_run``: the sweep's best point's run (its
    parent's ``sweep.best_run``), outlined as the best cell when it is one.
    """
    split = check_comparable(frame, gan_test=True)
    column = metric_column(frame, metric)
    stats = cell_stats(frame, column)
    text, values = _text_table(stats, axes), _value_table(stats, column, axes)
    floor = _value_table(stats, FLOOR[column], axes) if f"{FLOOR.get(column)}_mean" in stats.columns else None
    for lam, mu, row in zip(stats["lam"], stats["mu"], stats.to_dict("records")):
        if column not in ("test_acc", "gan_test") and np.isfinite(row[f"{column}_mean"]):
            text.at[lam, mu] += f"; {column} " + value_text(row[f"{column}_mean"], row[f"{column}_lo"],
                                                            row[f"{column}_hi"], column in PERCENT)
            if floor is not None and np.isfinite(floor.at[lam, mu]):
                text.at[lam, mu] += f" (floor {floor.at[lam, mu]:.3f})"
    marks = separability(frame, stats, column, best_run)
    for lam, mu, mark in zip(stats["lam"], stats["mu"], marks):
        if mark and text.at[lam, mu]:
            text.at[lam, mu] += " **(best)**" if mark == BEST else " (not separable from best)"
    notice = selection_notice(split)
    separable = separability_note(frame, stats, column, best_run)
    notes = ([notice] if notice else []) + ([separable] if separable else []) + [noise_note(stats, column)]
    off_grid = caption(frame)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (f"{stem}table2.png", f"{stem}table2.md", f"{stem}table2.csv")}
    title = f"Table 2, {describe(frame)}: test accuracy % / GAN-test % [95 % interval]"
    shown = notes + (["Not in the grid: " + "; ".join(off_grid)] if off_grid else [])
    chars = line_chars(figure_width(len(values.columns)), NOTE_PT)
    wrapped = [line for note in shown for line in textwrap.wrap(note, chars)]
    plot_heatmap(stats, values, column, paths[f"{stem}table2.png"], wrapped, title, marks=marks, split=split)
    paths[f"{stem}table2.md"].write_text(to_markdown(text, notes + off_grid))
    stats.to_csv(paths[f"{stem}table2.csv"], index=False)
    return paths
