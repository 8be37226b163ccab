"""Several sweeps' Pareto fronts in one plot, each with its hypervolume (``python -m analysis fronts``).

Each sweep's front is drawn as the staircase that bounds the area it dominates (shaded lightly
down to the reference point), so the plot shows what the hypervolume measures; each front point
is a point's mean over its seeds with its 95 % interval as error bars (the title says which
interval). Outputs:
``fronts.png`` and ``fronts.csv`` (one row per front point, with its sweep's hypervolume).
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.hypervolume import DEFAULT_REFERENCE, describe_reference, front_hypervolume
from analysis.pareto import error_bars, default_minimize, export_columns, front_axes, interval_note, point_front
from analysis.runs import (LABELS, LOWER_IS_BETTER, PERCENT, AnalysisError, column_name, completed, load,
                           select_parent, sweeps)
from sweep.record import Status


LINESTYLES = ("-", "--", ":", "-.")
TITLE_CHARS = 90  # characters per title line at 8 points over the axes the legend leaves
MARKERS = ("o", "s", "^", "D", "v", "P")


def _staircase(xs: np.ndarray, ys: np.ndarray, ref: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The outline of the area maximized points dominate above ``ref``, as a closed polygon:
    (r_x, r_y), (r_x, y_1), (x_1, y_1), (x_1, y_2), ..., (x_n, y_n), (x_n, r_y) for a front sorted
    by x ascending (so y descending)."""
    keep = (xs > ref[0]) & (ys > ref[1])
    order = np.argsort(xs[keep], kind="stable")
    fx, fy = xs[keep][order], ys[keep][order]
    px, py = [ref[0], ref[0]], [ref[1], fy[0] if len(fy) else ref[1]]
    for i in range(len(fx)):
        px += [fx[i], fx[i]]
        py += [fy[i], fy[i + 1] if i + 1 < len(fy) else ref[1]]
    return np.asarray(px), np.asarray(py)


def write_fronts(experiment: str, names: Sequence[str], out_dir: Path, tracking_uri: str | None = None,
                 x: str | None = None, y: str = "gan_test", reference: tuple[float, float] | None = None,
                 include_stopped: bool = False, minimize: Collection[str] | None = None
                 ) -> tuple[dict[str, Path], dict[str, float], tuple[str, str]]:
    """Plot the fronts of the sweeps ``names`` (the most recent run of each name; every sweep
    of the experiment when empty). Returns the written files, each sweep's hypervolume and the
    two metric columns drawn (``x=None``: the accuracy the trials selected by)."""
    if not names:
        names = list(dict.fromkeys(sweeps(experiment, tracking_uri)["sweep"].dropna()))
        if not names:
            raise AnalysisError(f"no sweep (parent run) in MLflow experiment {experiment!r}")
    frames = {name: load(experiment, tracking_uri, select_parent(experiment, tracking_uri, name)) for name in names}
    xc, yc = front_axes(pd.concat(frames.values()), x, y)  # one split and judge across the sweeps
    minimize = default_minimize(xc, yc) if minimize is None else minimize
    minimized = {column_name(m) for m in minimize}
    sign = np.array([-1.0 if c in minimized else 1.0 for c in (xc, yc)])
    scale = np.array([100.0 if c in PERCENT else 1.0 for c in (xc, yc)])  # fractions shown in percent
    ref = np.array(DEFAULT_REFERENCE if reference is None else reference, dtype=float)

    fig, ax = plt.subplots(figsize=(8.4, 4.8), dpi=120)
    rows, volumes, notes = [], {}, set()
    kind = f"{Status.FINISHED} or {Status.STOPPED}" if include_stopped else str(Status.FINISHED)
    for i, (name, frame) in enumerate(frames.items()):
        color = f"C{i % 10}"
        # Over points: seeds averaged, each number with its 95 % interval (drawn as error bars).
        front = point_front(frame, xc, yc, include_stopped=include_stopped, minimize=minimize)
        volumes[name] = front_hypervolume(frame, xc, yc, reference, include_stopped, minimize)
        # The trials the front was chosen from, as pareto.png counts them: those that ran to the end
        # (or were stopped, with include_stopped) and have both metrics; a diverged trial is not one.
        n_pool = int((completed(frame, include_stopped) & frame[xc].notna() & frame[yc].notna()).sum())
        points = "points" if "seeds" in front.columns and (front["seeds"] > 1).any() else "trials"
        fx, fy = front[xc].to_numpy(float), front[yc].to_numpy(float)
        # Outline in the maximized orientation, then back to the metrics' own direction and units.
        ox, oy = _staircase(sign[0] * fx, sign[1] * fy, (sign[0] * ref[0], sign[1] * ref[1]))
        ox, oy = sign[0] * ox * scale[0], sign[1] * oy * scale[1]
        ax.fill(ox, oy, color=color, alpha=0.08, lw=0)
        # Own line style, marker and a shrinking size: sweeps with the same front stay visible.
        ax.plot(ox, oy, color=color, lw=1.2, ls=LINESTYLES[i % len(LINESTYLES)])
        ax.scatter(fx * scale[0], fy * scale[1], color=color, s=max(70 - 14 * i, 14), zorder=3 + i,
                   marker=MARKERS[i % len(MARKERS)],
                   label=f"{name}: hypervolume {volumes[name]:.4f} ({len(front)} {points} of {n_pool} {kind} "
                         "trials on the front)")
        ax.errorbar(fx * scale[0], fy * scale[1], xerr=error_bars(front, xc), yerr=error_bars(front, yc), fmt="none",
                    ecolor=color, alpha=0.4, lw=0.8, capsize=2, zorder=2 + i)
        notes.add(interval_note(front))
        on_front = frame["config_key"].isin(front["config_key"]) if "config_key" in frame.columns else \
            frame["run_id"].isin(front["run_id"])
        others = frame[frame[xc].notna() & frame[yc].notna() & ~on_front]
        ax.scatter(others[xc] * scale[0], others[yc] * scale[1], color=color, marker="x", s=14, alpha=0.5)
        rows.append(export_columns(front, xc, yc).assign(sweep=name, hypervolume=volumes[name]))
    ax.set_xlabel(LABELS.get(xc, xc) + (" (lower is better)" if xc in LOWER_IS_BETTER else ""))
    ax.set_ylabel(LABELS.get(yc, yc) + (" (lower is better)" if yc in LOWER_IS_BETTER else ""))
    count = f"{len(frames)} sweep" + ("s" if len(frames) != 1 else "")
    # One line per distinct note, each wrapped to what the axes beside the legend hold at 8 points.
    lines = [f"Pareto fronts of {count} in {experiment!r} (crosses: off the front)",
             f"hypervolume against {describe_reference(xc, yc, reference)}", *sorted(notes)]
    ax.set_title("\n".join(part for line in lines for part in textwrap.wrap(line, TITLE_CHARS)), fontsize=8)
    ax.grid(alpha=0.3)
    # Beside the axes, never over a point.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"fronts.png": out_dir / "fronts.png", "fronts.csv": out_dir / "fronts.csv"}
    fig.savefig(paths["fronts.png"])
    plt.close(fig)
    pd.concat(rows, ignore_index=True).to_csv(paths["fronts.csv"], index=False)
    return paths, volumes, (xc, yc)
