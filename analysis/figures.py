"""Cross-run figures of the paper: Fig. 1 (density ratios), Fig. 3a/3b (pixel perturbation), Table 1.

Each curve point is a metric the trainer logs (``trainer.keys.density_ratio_key(sigma)``,
``trainer.keys.pixel_perturbation_key(fraction)``); :func:`analysis.runs.load` keeps their last
logged values as columns named by those keys. Trials of the same model (loss, λ, μ) are
averaged over seeds, so the table1 preset's four models give the paper's four curves.

Fig. 3b is not logged by the trials: :func:`fig3b_pixel_perturbation` downloads the runs'
checkpoints and computes it (the baseline's accuracy when pixels are ranked by another model).
"""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from analysis.runs import (AnalysisError, completed, default_tracking_uri, describe, interval_of,
                           selection_accuracy, selection_split)
from analysis.table2 import markdown_table
from sweep.record import LOSS_NAMES
from trainer import keys
from trainer.keys import DENSITY_RATIO_PREFIX, PIXEL_PERTURBATION_PREFIX


def select(frame: pd.DataFrame, runs: Sequence[str] | None = None) -> pd.DataFrame:
    """Finished trials, restricted to ``runs`` (run ids or run names) when given, with a
    ``model`` label per (loss, λ, μ); λ, μ are named only where a loss appears with several."""
    chosen = frame[completed(frame)]
    if runs:
        wanted = set(runs)
        unknown = wanted - set(frame["run_id"]) - set(frame["run_name"])
        if unknown:
            raise AnalysisError(f"no trial with run id or name {sorted(unknown)[0]!r} in the selection")
        chosen = chosen[chosen["run_id"].isin(wanted) | chosen["run_name"].isin(wanted)]
        if chosen.empty:
            raise AnalysisError("none of the chosen runs is a finished trial")
    chosen = chosen.copy()
    configs = chosen.groupby("loss")[["lam", "mu"]].nunique().max(axis=1)

    def label(row: pd.Series) -> str:
        name = LOSS_NAMES[row["loss"]].paper if row["loss"] in LOSS_NAMES else str(row["loss"])
        if configs.get(row["loss"], 1) > 1:
            name += f" λ={row['lam']:.0e}" + (f" μ={row['mu']:.0e}" if row["loss"] == "score_matching" else "")
        return name

    chosen["model"] = chosen.apply(label, axis=1)
    order = {kind: i for i, kind in enumerate(LOSS_NAMES)}  # the paper's order
    chosen["_order"] = chosen["loss"].map(order).fillna(len(order))
    # λ, μ largest first, as in Table 2.
    chosen = chosen.sort_values(["_order", "lam", "mu"], ascending=[True, False, False], kind="stable")
    return chosen.drop(columns="_order")


def _curve_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    """The curve's point columns (``<prefix><x>``), without their interval ends (``_lo``, ``_hi``)."""
    ends = (keys.LO_SUFFIX, keys.HI_SUFFIX)
    return [c for c in frame.columns if c.startswith(prefix) and not c.endswith(ends)]


def curve_intervals(chosen: pd.DataFrame, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Curve ``prefix`` per model as (mean, lo, hi, n): tables indexed by the parsed x value (σ or
    fraction) with a column per model, in the models' order; each point the mean over the model's
    seeds with its 95 % interval (:func:`analysis.runs.interval_of`: Student's t over n ≥ 2 seeds,
    else the run's own logged interval, NaN ends when none was logged); n: seeds per model."""
    columns = _curve_columns(chosen, prefix)
    models = list(dict.fromkeys(chosen["model"]))
    cells: dict[str, dict] = {"value": {}, "lo": {}, "hi": {}}
    n: dict[str, int] = {}
    for model in models:
        rows = chosen[chosen["model"] == model]
        for column in columns:
            if rows[column].notna().any():
                interval, _ = interval_of(rows, column)
                x = float(column.removeprefix(prefix))
                for part, value in (("value", interval.value), ("lo", interval.lo), ("hi", interval.hi)):
                    cells[part].setdefault(model, {})[x] = value
                n[model] = max(n.get(model, 0), int(rows[column].notna().sum()))
    tables = [pd.DataFrame(cells[part]).sort_index() for part in ("value", "lo", "hi")]
    shown = [m for m in models if m in tables[0].columns]
    return (*(t[shown] if len(t) else pd.DataFrame() for t in tables), n)


TITLE_CHARS = 80  # characters per title line of a curve figure
# The error bars' meaning, said on every curve figure that draws them.
BARS_NOTE = ("bars: 95 % intervals, Student's t over the n seeds where n ≥ 2, else the run's own "
             "(over its test images)")


def plot_curves(table: pd.DataFrame, path: Path, xlabel: str, ylabel: str, title: str,
                lo: pd.DataFrame | None = None, hi: pd.DataFrame | None = None,
                n: dict[str, int] | None = None) -> Path:
    """One line per model on a log x axis, each point with its 95 % interval as an error bar where
    ``lo``/``hi`` give one (no bar where an end is unknown) and ``n`` (seeds per model) in the
    legend; writes a PNG."""
    fig, ax = plt.subplots(figsize=(9.0, 4.4), dpi=120)
    for model in table.columns:
        label = model + (f" (n={n[model]} seed{'s' if n[model] != 1 else ''})" if n and model in n else "")
        values = table[model].to_numpy(float)
        err = None
        if lo is not None and hi is not None and model in lo.columns:
            below, above = values - lo[model].to_numpy(float), hi[model].to_numpy(float) - values
            err = np.nan_to_num(np.clip(np.stack([below, above]), 0, None), nan=0.0, posinf=0.0)
        ax.errorbar(table.index, values, yerr=err, marker="o", ms=3, capsize=2, elinewidth=0.8, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    lines = title.splitlines() + ([BARS_NOTE] if lo is not None else [])
    # Over the axes, which the legend beside them leaves about 80 characters of 10 points wide.
    ax.set_title("\n".join(part for line in lines for part in textwrap.wrap(line, TITLE_CHARS)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside, clear of curves
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def table1_frame(chosen: pd.DataFrame) -> pd.DataFrame:
    """Table 1: GAN-test % (and test accuracy %) per model, each ± the half-width of its 95 %
    interval: one run's own (Wilson), or Student's t over n seeds (:func:`analysis.runs.interval_of`)."""
    rows = []
    for model, group in chosen.groupby("model", sort=False):
        row = {"model": model, "n": len(group)}
        for col, name in (("gan_test", "GAN-test (%)"), ("test_acc", "test accuracy (%)")):
            interval, _ = interval_of(group, col)
            value, half = interval.value * 100, interval.half_width * 100
            row[name] = ("–" if not np.isfinite(value) else f"{value:.2f}" if not np.isfinite(half)
                         else f"{value:.2f} ± {half:.2f}")
        rows.append(row)
    return pd.DataFrame(rows)


def write_figures(frame: pd.DataFrame, out_dir: Path, runs: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``fig1_density_ratio.png``, ``fig3_pixel_perturbation.png`` (each when its curve was
    logged), ``table1.md`` and ``table1.csv``. Raises AnalysisError when no curve was logged."""
    chosen = select(frame, runs)
    density, pixel = curve_intervals(chosen, DENSITY_RATIO_PREFIX), curve_intervals(chosen, PIXEL_PERTURBATION_PREFIX)
    if density[0].empty and pixel[0].empty:
        raise AnalysisError(f"no selected trial logged {DENSITY_RATIO_PREFIX}* or {PIXEL_PERTURBATION_PREFIX}* metrics "
                            "(are evaluations enabled?)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if not density[0].empty:
        table, lo, hi, n = density
        paths["fig1_density_ratio.png"] = plot_curves(
            table, out_dir / "fig1_density_ratio.png", "standard deviation of η",
            "p(x + η) / p(x)", f"Fig. 1, {describe(chosen)}: density ratios (lower is better)", lo, hi, n)
    if not pixel[0].empty:
        table, lo, hi, n = pixel
        paths["fig3_pixel_perturbation.png"] = plot_curves(
            table, out_dir / "fig3_pixel_perturbation.png", "masking fraction",
            "fraction of images correctly classified",
            f"Fig. 3a, {describe(chosen)}: pixel perturbation (higher is better)", lo, hi, n)
    table = table1_frame(chosen)
    paths["table1.csv"] = out_dir / "table1.csv"
    table.to_csv(paths["table1.csv"], index=False)
    paths["table1.md"] = out_dir / "table1.md"
    note = ("\nEach number ± the half-width of its 95 % interval: one seed, the run's own (Wilson over the "
            "samples or the test images); n seeds, Student's t over them.\n")
    paths["table1.md"].write_text("\n".join(markdown_table(table)) + "\n" + note)
    return paths


def fig3b_pixel_perturbation(
    frame: pd.DataFrame,
    out_dir: str | Path,
    *,
    baseline_run_id: str | None = None,
    run_ids: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    images: int = 256,
    points: int = 9,
    fill: str = "image_mean",
    device: str = "cpu",
) -> dict[str, Path]:
    """Fig. 3b: the baseline's accuracy on its first ``images`` test images after removing the
    pixels that each chosen model's input gradients rank least important (paper §5.2.1).

    The baseline is ``baseline_run_id`` (run id or name), else the finished ``ce`` trial with the
    best test accuracy. The explainers are ``run_ids`` (default: every finished trial) plus the
    baseline itself; models are rebuilt from their checkpoints' stored configs and the test set
    from the baseline's. Curves of the same model (loss, λ, μ) are averaged over seeds, as in
    Fig. 3a. Writes ``fig3b_pixel_perturbation.png`` and ``fig3b.csv`` (fraction × model).
    Raises AnalysisError for no baseline, a chosen run without checkpoint, or checkpoints of
    different datasets.
    """
    # torch and the models load only when Fig. 3b is asked for: the other outputs need neither.
    from trainer.config import ConfigError
    from trainer.evaluate import UsageError, model_from_checkpoint
    from trainer.evaluation import pixel_perturbation

    if images < 1 or points < 2:
        raise AnalysisError(f"Fig. 3b needs at least 1 image and 2 points, got {images} and {points}")
    done = frame[completed(frame)]
    if baseline_run_id is not None:
        baseline = done[(done["run_id"] == baseline_run_id) | (done["run_name"] == baseline_run_id)]
        if baseline.empty:
            raise AnalysisError(f"no finished trial with run id or name {baseline_run_id!r} for the Fig. 3b baseline")
    else:
        # The best baseline by the accuracy the trials selected by (validation, unless they selected on test).
        by = selection_accuracy(selection_split(done))
        baseline = done[done["loss"] == "ce"].sort_values(by, ascending=False, kind="stable")
        if baseline.empty:
            raise AnalysisError("Fig. 3b needs a baseline: no finished trial with loss.kind=ce in the selection")
    baseline = baseline.iloc[0]
    chosen = select(frame, run_ids)
    if baseline["run_id"] not in set(chosen["run_id"]):
        chosen = select(frame, [*chosen["run_id"], baseline["run_id"]])
    missing = chosen.loc[chosen["checkpoint_uri"].isna(), "run_name"].tolist()
    if missing:
        raise AnalysisError(f"run {missing[0]!r} has no checkpoint artifact for Fig. 3b "
                            "(choose runs with checkpoints/best.pt or last.pt)")

    fractions = np.logspace(-2, 0, points)
    uri = tracking_uri or default_tracking_uri()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fig3b-") as tmp:

        def rebuild(row: pd.Series) -> tuple:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=row["checkpoint_uri"], dst_path=str(Path(tmp, row["run_id"])), tracking_uri=uri)
            try:
                return model_from_checkpoint(path, device)
            except (UsageError, ConfigError) as e:
                raise AnalysisError(f"run {row['run_name']!r}: {e}") from None

        model, cfg, data = rebuild(baseline)
        x, y = data.test_x[:images], data.test_y[:images]
        for _, row in chosen.iterrows():
            if row["run_id"] == baseline["run_id"]:
                explainer = model
            else:
                explainer, other, _ = rebuild(row)
                if other.data.dataset != cfg.data.dataset:
                    raise AnalysisError(
                        f"run {row['run_name']!r} was trained on {other.data.dataset}, the Fig. 3b baseline "
                        f"{baseline['run_name']!r} on {cfg.data.dataset}: choose runs of one dataset")
            curve = pixel_perturbation(model, x, y, explainer=explainer, fractions=fractions, fill=fill)
            rows += [{"model": row["model"], "fraction": f, "accuracy": a} for f, a in curve.items()]
    table = pd.DataFrame(rows).pivot_table(index="fraction", columns="model", values="accuracy",
                                           aggfunc="mean", sort=False)
    table = table[list(dict.fromkeys(chosen["model"]))]
    label = chosen.loc[chosen["run_id"] == baseline["run_id"], "model"].iloc[0]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"fig3b.csv": out_dir / "fig3b.csv"}
    table.to_csv(paths["fig3b.csv"])
    paths["fig3b_pixel_perturbation.png"] = plot_fig3b(table, out_dir / "fig3b_pixel_perturbation.png", chosen,
                                                       label, str(baseline["run_name"]), len(x))
    return paths


def plot_fig3b(table: pd.DataFrame, path: Path, chosen: pd.DataFrame, label: str, baseline: str, images: int) -> Path:
    """Fig. 3b's picture: the baseline's accuracy (``table``: fraction × model, from
    :func:`fig3b_pixel_perturbation`) on ``images`` test images, pixels ranked by each model."""
    return plot_curves(
        table, path, "masking fraction", f"accuracy of the baseline (n={images} test images)",
        f"Fig. 3b, {describe(chosen)}: {label} ({baseline}) evaluated\n"
        "with gradients of different models (higher is better)")
