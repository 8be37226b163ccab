"""Read a sweep's trials from MLflow into one tidy pandas frame (one row per trial).

The layout read here is the one ``sweep`` writes: a parent run per sweep (tag
``sweep.role=parent``) and a child run per trial (tag ``sweep.role=trial``) whose params are
the flattened trainer config and whose metrics use the names in :mod:`trainer.keys`.
Everything downstream (Table 2, Pareto fronts, figures) is a pure function of this frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from trainer import keys


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message names the problem (the CLI exits 2)."""


# Frame column -> trainer config param (MLflow logs params as strings; cast below).
NUMERIC_PARAMS: dict[str, str] = {
    "lam": "loss.lam",  # λ, weight of the regularizer
    "mu": "loss.mu",  # μ, weight of the stability term
    "sigma": "loss.sigma",  # std of the trace estimator's noise
    "tau": "loss.tau",
    "seed": "seed",
    "epochs": "epochs",  # configured epochs
    "width": "model.width",
}
TEXT_PARAMS: dict[str, str] = {
    "loss": "loss.kind",  # ce | grad_norm | score_matching | anti_score_matching
    "estimator": "loss.estimator",
    "dataset": "data.dataset",
    "arch": "model.arch",
}
# Frame column -> metric key; the value is the run's latest (highest-step) value.
METRICS: dict[str, str] = {
    "test_acc": keys.TEST_ACC,
    "test_loss": keys.TEST_LOSS,
    "train_acc": keys.TRAIN_ACC,
    "train_loss": keys.TRAIN_LOSS,
    "gan_test": keys.GAN_TEST,
    "objective": keys.OBJECTIVE,
    "score_alignment": keys.SCORE_ALIGNMENT,
    "fisher_divergence": keys.FISHER_DIVERGENCE,
    "fisher_divergence_rel": keys.FISHER_DIVERGENCE_REL,
    "sample_loglik": keys.SAMPLE_LOGLIK,
    "epochs_done": keys.EPOCH,  # completed epochs
}
# Metrics where smaller is better; every other metric is maximized.
LOWER_IS_BETTER = frozenset({"test_loss", "train_loss", "fisher_divergence", "fisher_divergence_rel"})
# Fractions in [0, 1] shown as percentages.
PERCENT = frozenset({"test_acc", "gan_test", "train_acc"})
LABELS: dict[str, str] = {
    "test_acc": "test accuracy (%)",
    "test_loss": "test loss",
    "train_acc": "train accuracy (%)",
    "train_loss": "train loss",
    "gan_test": "GAN-test (%)",
    "objective": "objective",
    "score_alignment": "score alignment (cosine)",
    "fisher_divergence": "Fisher divergence",
    "fisher_divergence_rel": "relative Fisher divergence",
    "sample_loglik": "sample log-likelihood per dim",
}

# Short display names of the loss kinds, in the paper's order (baseline first).
LOSS_NAMES: dict[str, str] = {
    "ce": "baseline",
    "anti_score_matching": "anti-score-matching",
    "grad_norm": "gradient norm",
    "score_matching": "score matching",
}

# Trial states written by the sweep in the tag ``trial.status``.
STATUSES = ("running", "finished", "diverged", "stopped", "failed")
# Used when a run has no ``trial.status`` tag.
_MLFLOW_STATUS = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished",
                  "FAILED": "failed", "KILLED": "failed"}
CHECKPOINTS = ("checkpoints/best.pt", "checkpoints/last.pt")  # preferred first

ROLE_TAG = "sweep.role"
SWEEP_TAG = "sweep.name"
PARENT_TAG = "mlflow.parentRunId"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory (as the sweep)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MLflow client for an existing store; a missing sqlite file is an AnalysisError.

    Checked first because opening a sqlite URI would silently create an empty store.
    """
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise AnalysisError(f"no MLflow store at {uri} (file {str(path)!r} does not exist)")
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow: MlflowClient, experiment: str) -> str:
    """The id of the experiment named ``experiment``; unknown names are an AnalysisError."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in mlflow.search_experiments())
        raise AnalysisError(f"no MLflow experiment named {experiment!r} at {mlflow.tracking_uri}"
                            f" (experiments there: {', '.join(names) or 'none'})")
    return exp.experiment_id


def _search(mlflow: MlflowClient, exp_id: str, filter_string: str, order_by: list[str] | None = None) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = mlflow.search_runs([exp_id], filter_string, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def sweeps(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The experiment's sweeps (parent runs), newest first: run_id, sweep, start_time, status."""
    mlflow = client(tracking_uri)
    exp_id = experiment_id(mlflow, experiment)
    parents = _search(mlflow, exp_id, f"tags.`{ROLE_TAG}` = 'parent'", ["attributes.start_time DESC"])
    return pd.DataFrame(
        [{"run_id": r.info.run_id, "sweep": r.data.tags.get(SWEEP_TAG, r.info.run_name),
          "start_time": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC"), "status": r.info.status}
         for r in parents],
        columns=["run_id", "sweep", "start_time", "status"],
    )


def select_parent(experiment: str, tracking_uri: str | None = None, sweep: str | None = None) -> str:
    """The run id of the most recent sweep in the experiment (named ``sweep`` when given)."""
    found = sweeps(experiment, tracking_uri)
    if sweep is not None:
        found = found[found["sweep"] == sweep]
    if found.empty:
        what = f"no sweep named {sweep!r}" if sweep is not None else "no sweep (parent run)"
        raise AnalysisError(f"{what} in MLflow experiment {experiment!r}")
    return str(found["run_id"].iloc[0])


def _parent(mlflow: MlflowClient, exp_id: str, run_id: str) -> Run | None:
    """The parent run ``run_id`` if it exists in the experiment, else None."""
    try:
        run = mlflow.get_run(run_id)
    except MlflowException:
        return None
    ok = run.info.experiment_id == exp_id and run.data.tags.get(ROLE_TAG) == "parent"
    return run if ok else None


def _checkpoint_uri(mlflow: MlflowClient, run: Run) -> str | None:
    present = {f.path for f in mlflow.list_artifacts(run.info.run_id, "checkpoints")}
    for path in CHECKPOINTS:
        if path in present:
            return f"{run.info.artifact_uri.rstrip('/')}/{path}"
    return None


def _row(mlflow: MlflowClient, run: Run) -> dict:
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    row: dict = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "sweep": tags.get(SWEEP_TAG),
        "parent_run_id": tags.get(PARENT_TAG),
        "trial_id": tags.get("trial.id"),
        "status": tags.get("trial.status") or _MLFLOW_STATUS.get(run.info.status, "failed"),
        "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
        "checkpoint_uri": _checkpoint_uri(mlflow, run),
        "artifact_uri": run.info.artifact_uri,
        "has_lam_mu": NUMERIC_PARAMS["lam"] in params and NUMERIC_PARAMS["mu"] in params,
    }
    for col, key in TEXT_PARAMS.items():
        row[col] = params.get(key)
    for col, key in NUMERIC_PARAMS.items():
        row[col] = params.get(key)
    for col, key in METRICS.items():
        row[col] = metrics.get(key, np.nan)
    # Curve metrics (density ratios, pixel perturbation, ...) keep their MLflow key as column name.
    known = set(METRICS.values())
    row.update({k: v for k, v in metrics.items() if k not in known})
    return row


def load(experiment: str, tracking_uri: str | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """One row per trial of ``experiment`` (of the sweep ``parent_run_id`` when given).

    Columns: ``run_id, run_name, sweep, parent_run_id, trial_id, status, loss, lam, mu, sigma,
    seed, epochs, epochs_done``, the metrics of :data:`METRICS` under their short names (NaN when a
    run did not log them), ``checkpoint_uri`` (best.pt, else last.pt, else None) and every other
    logged metric under its MLflow key. Numbers are numbers. Raises AnalysisError for an unknown
    experiment or sweep, no trial with status ``finished``, or trials without λ/μ params.
    """
    mlflow = client(tracking_uri)
    exp_id = experiment_id(mlflow, experiment)
    where = f"tags.`{ROLE_TAG}` = 'trial'"
    scope = f"MLflow experiment {experiment!r}"
    if parent_run_id is not None:
        parent = _parent(mlflow, exp_id, parent_run_id)
        if parent is None:
            raise AnalysisError(f"no sweep (parent run) with id {parent_run_id!r} in {scope}")
        where += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
        scope = f"sweep {parent.data.tags.get(SWEEP_TAG, parent_run_id)!r} of {scope}"
    runs = _search(mlflow, exp_id, where, ["attributes.start_time ASC"])
    if not runs:
        raise AnalysisError(f"no trial runs (tag {ROLE_TAG}=trial) in {scope}")
    frame = pd.DataFrame([_row(mlflow, r) for r in runs])
    counts = frame["status"].value_counts()
    if counts.get("finished", 0) == 0:
        seen = ", ".join(f"{n} {s}" for s, n in counts.items())
        raise AnalysisError(f"no finished trials in {scope} ({seen})")
    if not frame["has_lam_mu"].all():
        missing = frame.loc[~frame["has_lam_mu"], "run_name"].tolist()
        raise AnalysisError(f"{len(missing)} trial(s) in {scope} have no loss.lam/loss.mu params "
                            f"(e.g. {missing[0]!r}); were they written by the sweep?")
    frame = frame.drop(columns="has_lam_mu")
    for col in NUMERIC_PARAMS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    # Int64 (nullable): seeds and epoch counts are integers, possibly missing.
    for col in ("seed", "epochs", "epochs_done"):
        frame[col] = frame[col].round().astype("Int64")
    return frame.reset_index(drop=True)


def completed(frame: pd.DataFrame, include_stopped: bool = False) -> pd.Series:
    """Mask of trials that ran to the end: status finished and all configured epochs done.

    With ``include_stopped``, trials stopped early (status ``stopped``, or finished with fewer
    epochs than configured) count too; diverged, failed and running trials never do.
    """
    if include_stopped:
        return frame["status"].isin(["finished", "stopped"])
    full = (frame["epochs_done"].isna() | frame["epochs"].isna() | (frame["epochs_done"] >= frame["epochs"]))
    return (frame["status"] == "finished") & full.fillna(True).astype(bool)


def describe(frame: pd.DataFrame) -> str:
    """What the trials are, for figure titles: ``sweep 'quickstart'`` or ``3 sweeps``."""
    names = frame["sweep"].dropna().unique() if "sweep" in frame.columns else []
    return f"sweep {names[0]!r}" if len(names) == 1 else f"{len(names)} sweeps" if len(names) else "trials"


def column_name(metric: str) -> str:
    """The frame column of a metric given as a column name or as its MLflow key."""
    return next((col for col, key in METRICS.items() if key == metric), metric)


def metric_column(frame: pd.DataFrame, metric: str) -> str:
    """Resolve a metric given as a frame column or an MLflow key; it must have values."""
    column = column_name(metric)
    if column not in frame.columns:
        known = sorted(set(METRICS) - {"epochs_done"})
        raise AnalysisError(f"unknown metric {metric!r}; choose from {', '.join(known)}")
    if pd.to_numeric(frame[column], errors="coerce").isna().all():
        raise AnalysisError(f"metric {metric!r} was not logged by any selected trial")
    return column
