"""From a sweep's MLflow runs to the paper's Table 2 heatmap, Pareto fronts and figures.

``analysis.runs.load`` reads the trials into one tidy frame; ``table2``, ``pareto`` and
``figures`` are functions of that frame that write PNG/CSV/Parquet/Markdown files.
:func:`report_sweep` does all that applies for one sweep and attaches the files to the sweep's
parent run under ``analysis/``; ``python -m analysis`` is the command line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from analysis import figures, pareto, table2
from analysis.hypervolume import front_hypervolume_interval
from analysis.runs import AnalysisError, check_comparable, client, load, selection_notice
from sweep import tracking
from sweep.record import HYPERVOLUME, Tag
from trainer import keys
from trainer.stats import Interval

__all__ = ["AnalysisError", "default_out_dir", "load", "log_outputs", "report_sweep"]

log = logging.getLogger(__name__)
ARTIFACT_DIR = "analysis"  # where the outputs go in the parent run's artifacts
# Ground-truth metrics (known-density datasets): each gets its own heatmap and front vs accuracy.
GROUNDTRUTH_METRICS = ("score_alignment", "fisher_divergence_rel", "sample_loglik")


def sweep_best_run(parent_run_id: str, tracking_uri: str | None = None) -> str | None:
    """The run of the sweep's best point as its parent names it (tag ``sweep.best_run``), or None."""
    return client(tracking_uri).get_run(parent_run_id).data.tags.get(Tag.BEST_RUN) or None


def hypervolume_metrics(volume: Interval) -> dict[str, float]:
    """``sweep/hypervolume`` and its interval's ends, for the parent run."""
    return {HYPERVOLUME: volume.value, keys.lo_key(HYPERVOLUME): volume.lo, keys.hi_key(HYPERVOLUME): volume.hi}


def default_out_dir(experiment: str, sweep: str) -> Path:
    """The one folder of a sweep's analysis files, for the sweep and the CLI alike:
    ``out/analysis/<experiment>/<sweep>/`` under the working folder (``<sweep>`` is ``all`` for
    every trial of the experiment)."""
    return Path("out", "analysis", experiment, sweep)


def log_outputs(paths: Mapping[str, Path], parent_run_id: str, tracking_uri: str | None = None) -> None:
    """Attach the written files to the sweep's parent run under ``analysis/``."""
    mlflow = client(tracking_uri)
    for path in paths.values():
        mlflow.log_artifact(parent_run_id, str(path), ARTIFACT_DIR)


def report_sweep(experiment: str, parent_run_id: str, out_dir: str | Path,
                 tracking_uri: str | None = None, best_run: str | None = None) -> dict[str, Path]:
    """Write every analysis output that applies to one sweep and log them to its parent run.

    Table 2 (coloured by the objective, or test accuracy when no objective was logged), the
    front of the accuracy the trials selected by (validation, or test when they selected on it)
    against GAN-test (its hypervolume against (0, 0) logged as metric ``sweep/hypervolume``, with
    its 95 % interval as ``_lo``/``_hi``), Fig. 1/3 and Table 1 when their curves were logged, and for each
    ground-truth metric present a heatmap and a front against accuracy. Parts that do not apply
    (no score-matching trial, no GAN-test, no curves) are skipped with a log message. Returns
    file name -> path. ``best_run``: the sweep's best point's run (outlined in Table 2; by default
    the parent's tag ``sweep.best_run``). Raises AnalysisError when the sweep cannot be read or
    nothing applies.
    """
    frame = load(experiment, tracking_uri, parent_run_id)
    best_run = best_run or sweep_best_run(parent_run_id, tracking_uri)
    notice = selection_notice(check_comparable(frame, gan_test=False))
    if notice:
        log.warning("analysis: %s", notice)
    out_dir = Path(out_dir)
    metric = "objective" if frame["objective"].notna().any() else "test_acc"
    parts: dict[str, Callable[[], dict[str, Path]]] = {
        "table2": lambda: table2.write_table2(frame, out_dir, metric, best_run=best_run),
        "pareto": lambda: pareto.write_pareto(frame, out_dir, None, "gan_test"),  # x: the selection accuracy
        "figures": lambda: figures.write_figures(frame, out_dir),
    }
    for m in GROUNDTRUTH_METRICS:
        if frame[m].notna().any():
            parts[f"table2 by {m}"] = lambda m=m: table2.write_table2(frame, out_dir, m, stem=f"{m}_", best_run=best_run)
            parts[f"pareto of {m}"] = lambda m=m: pareto.write_pareto(frame, out_dir, None, m, stem=f"{m}_")
    paths: dict[str, Path] = {}
    skipped: list[str] = []
    for name, write in parts.items():
        try:
            paths.update(write())
        except AnalysisError as e:
            log.info("analysis: %s skipped: %s", name, e)
            skipped.append(f"{name}: {e}")
    if not paths:
        raise AnalysisError("nothing to report for this sweep: " + "; ".join(skipped))
    log_outputs(paths, parent_run_id, tracking_uri)
    if "front.csv" in paths:  # the accuracy/GAN-test front: its hypervolume against (0, 0)
        volume = front_hypervolume_interval(frame, None, "gan_test")  # x: the selection accuracy
        tracking.log_parent_metrics(client(tracking_uri), parent_run_id, hypervolume_metrics(volume))
    return paths
