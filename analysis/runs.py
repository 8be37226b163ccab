"""Read a sweep's trials from MLflow into one tidy pandas frame (one row per trial).

The layout read here is the one ``sweep.tracking`` writes, named in :mod:`sweep.record`: a
parent run per sweep (tag ``sweep.role=parent``) and a child run per trial (tag
``sweep.role=trial``) whose tags hold its :class:`~sweep.record.TrialRecord` (status, attempts,
checkpoint, ...), whose params are the flattened trainer config and whose metrics use the names
in :mod:`trainer.keys`. Everything downstream (Table 2, Pareto fronts, figures) is a pure
function of this frame.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

# MLflow logs the creation and migration of a new sqlite store at INFO; not news to a reader.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
from pydantic import ValidationError

from sweep.record import RETRAIN_TRIAL_PREFIX, Role, SelectionSplit, Status, Tag, TrialRecord, items_tag
from trainer import keys
from trainer.stats import Interval, seeds_interval

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
AXES = ("lam", "mu")  # Table 2's axes and the grid's: numbers, or the trial is refused (not dropped)
TEXT_PARAMS: dict[str, str] = {
    "loss": "loss.kind",  # ce | grad_norm | score_matching | anti_score_matching
    "estimator": "loss.estimator",
    "dataset": "data.dataset",
    "arch": "model.arch",
}
# Frame column -> metric key; the value is the run's latest (highest-step) value.
METRICS: dict[str, str] = {
    "val_acc": keys.VAL_ACC,  # the validation split: what selects
    "val_loss": keys.VAL_LOSS,
    "test_acc": keys.TEST_ACC,  # the test set: reported, never used to choose
    "test_loss": keys.TEST_LOSS,
    "train_acc": keys.TRAIN_ACC,
    "train_loss": keys.TRAIN_LOSS,
    "gan_test": keys.GAN_TEST,
    "objective": keys.OBJECTIVE,
    "score_alignment": keys.SCORE_ALIGNMENT,
    "fisher_divergence": keys.FISHER_DIVERGENCE,
    "fisher_divergence_rel": keys.FISHER_DIVERGENCE_REL,
    "fisher_divergence_rel_floor": keys.FISHER_DIVERGENCE_REL_FLOOR,  # what eq. 4 can reach
    "sample_loglik": keys.SAMPLE_LOGLIK,
    "sample_loglik_start": keys.SAMPLE_LOGLIK_START,  # its controls: the sampler's start, and
    "sample_loglik_flat": keys.SAMPLE_LOGLIK_FLAT,  # a model with zero input gradient
    # Confirmation: a finalist re-scored on draws selection never saw (what a sweep reports).
    "confirm_gan_test": keys.CONFIRM_GAN_TEST,
    "confirm_test_acc": keys.CONFIRM_TEST_ACC,
    "confirm_objective": keys.CONFIRM_OBJECTIVE,
    # With confirm.train_seeds: a retrained finalist's confirmed numbers, mean over its training seeds.
    "confirm_gan_test_seeds": keys.CONFIRM_GAN_TEST_SEEDS,
    "confirm_test_acc_seeds": keys.CONFIRM_TEST_ACC_SEEDS,
    "confirm_objective_seeds": keys.CONFIRM_OBJECTIVE_SEEDS,
    "epochs_done": keys.EPOCH,  # completed epochs
}
# Columns logged with a 95 % interval (trainer.stats): their ends are the columns <col>_lo, <col>_hi.
INTERVALS = ("val_acc", "test_acc", "gan_test", "objective", "score_alignment", "fisher_divergence",
             "fisher_divergence_rel", "sample_loglik", "sample_loglik_start", "sample_loglik_flat",
             "confirm_gan_test", "confirm_test_acc", "confirm_objective", "confirm_gan_test_seeds",
             "confirm_test_acc_seeds", "confirm_objective_seeds")
CONFIRMED = {"gan_test": "confirm_gan_test", "test_acc": "confirm_test_acc", "objective": "confirm_objective"}
# Metrics where smaller is better; every other metric is maximized.
LOWER_IS_BETTER = frozenset({"val_loss", "test_loss", "train_loss", "fisher_divergence", "fisher_divergence_rel",
                             "fisher_divergence_rel_floor"})
# Fractions in [0, 1] shown as percentages.
PERCENT = frozenset({"val_acc", "test_acc", "gan_test", "train_acc", "confirm_gan_test", "confirm_test_acc",
                     "confirm_gan_test_seeds", "confirm_test_acc_seeds"})
# Columns measured on the test set: reported, never used to rank or choose on trials selected on val.
TEST_COLUMNS = frozenset({"test_acc", "test_loss", "confirm_test_acc", "confirm_test_acc_seeds"})
LABELS: dict[str, str] = {
    "val_acc": "validation accuracy (%)",
    "val_loss": "validation loss",
    "test_acc": "test accuracy (%)",
    "test_loss": "test loss",
    "train_acc": "train accuracy (%)",
    "train_loss": "train loss",
    "gan_test": "GAN-test (%)",
    "objective": "objective",
    "score_alignment": "score alignment (cosine)",
    "fisher_divergence": "Fisher divergence",
    "fisher_divergence_rel": "relative Fisher divergence",
    "fisher_divergence_rel_floor": "relative Fisher divergence eq. 4 can reach",
    "sample_loglik": "sample log-likelihood per dim",
    "sample_loglik_start": "log-likelihood per dim of the sampler's start",
    "sample_loglik_flat": "log-likelihood per dim of a flat model's samples",
    "confirm_gan_test": "confirmed GAN-test (%)",
    "confirm_test_acc": "confirmed test accuracy (%)",
    "confirm_objective": "confirmed objective",
    "confirm_gan_test_seeds": "confirmed GAN-test, mean over training seeds (%)",
    "confirm_test_acc_seeds": "confirmed test accuracy, mean over training seeds (%)",
    "confirm_objective_seeds": "confirmed objective, mean over training seeds",
}

# A run's MLflow status, for runs without the tag trial.status.
_MLFLOW_STATUS = {"RUNNING": Status.RUNNING, "SCHEDULED": Status.RUNNING, "FINISHED": Status.FINISHED,
                  "FAILED": Status.FAILED, "KILLED": Status.FAILED}
# Frame column -> trial tag, besides those of the identity (run_id, run_name, sweep, parent_run_id).
RECORD_TAGS: dict[str, str] = {
    "trial_id": Tag.TRIAL_ID,
    "key": Tag.KEY,
    "attempts": Tag.ATTEMPTS,
    "judge": Tag.JUDGE,
    "judge_key": Tag.JUDGE_KEY,
    "judge_arch": Tag.JUDGE_ARCH,
    "best_objective": Tag.BEST_OBJECTIVE,
    "selection_split": Tag.SELECTION_SPLIT,
}
# Frame column items_<col> -> the metric whose per-item outcomes a run keeps (tag items.<metric>), for
# paired comparisons (analysis.verdicts); items_epoch: the evaluation they are of.
ITEMS: dict[str, str] = {col: METRICS[col] for col in ("val_acc", "test_acc", "gan_test", "confirm_test_acc",
                                                       "confirm_gan_test")}
ENV_TRACKING = "MLFLOW_TRACKING_URI"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory (as the sweep)."""
    return os.environ.get(ENV_TRACKING) or "sqlite:///mlflow.db"


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


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``uri`` for a ``mlflow.search_runs`` call (it
    takes no URI), then back: MLflow mirrors it into MLFLOW_TRACKING_URI, which the sweep's
    driver reads, so the variable is restored too."""
    before = os.environ.get(ENV_TRACKING)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None: unset again


def _search(mlflow_client: MlflowClient, exp_id: str, filter_string: str, order_by: list[str]) -> pd.DataFrame:
    """The matching runs as MLflow's frame (``tags.*``, ``params.*``, ``metrics.*`` columns);
    ``mlflow.search_runs`` pages through the store."""
    with _tracking_uri(mlflow_client.tracking_uri):
        return mlflow.search_runs([exp_id], filter_string, order_by=order_by, output_format="pandas")


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of MLflow's frame, all missing when no run has it."""
    return runs[name] if name in runs.columns else pd.Series(None, index=runs.index, dtype=object)


def sweeps(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The experiment's sweeps (parent runs), newest first: run_id, sweep, start_time, status."""
    mlflow = client(tracking_uri)
    exp_id = experiment_id(mlflow, experiment)
    parents = _search(mlflow, exp_id, f"tags.`{Tag.ROLE}` = '{Role.PARENT}'", ["attributes.start_time DESC"])
    columns = ["run_id", "sweep", "start_time", "status"]
    if parents.empty:
        return pd.DataFrame(columns=columns)
    sweep = _column(parents, f"tags.{Tag.SWEEP}").fillna(_column(parents, f"tags.{Tag.RUN_NAME}"))
    return parents.assign(sweep=sweep)[columns].reset_index(drop=True)


def select_parent(experiment: str, tracking_uri: str | None = None, sweep: str | None = None) -> str:
    """The run id of the most recent sweep in the experiment (named ``sweep`` when given)."""
    found = sweeps(experiment, tracking_uri)
    if sweep is not None:
        found = found[found["sweep"] == sweep]
    if found.empty:
        what = f"no sweep named {sweep!r}" if sweep is not None else "no sweep (parent run)"
        raise AnalysisError(f"{what} in MLflow experiment {experiment!r}{_elsewhere(sweep, tracking_uri)}")
    return str(found["run_id"].iloc[0])


def _elsewhere(sweep: str | None, tracking_uri: str | None) -> str:
    """Where sweep ``sweep`` is when not in the experiment asked for: ``--name NAME`` without
    ``experiment`` in the config puts a sweep in an experiment of its own name."""
    if sweep is None or client(tracking_uri).get_experiment_by_name(sweep) is None:
        return ""
    if (sweeps(sweep, tracking_uri)["sweep"] != sweep).all():
        return ""
    return (f"; it is in experiment {sweep!r} (a sweep's --name names its experiment unless the config sets "
            f"experiment: run sweeps to compare with --set experiment=NAME, or pass --experiment {sweep})")


def _parent(mlflow: MlflowClient, exp_id: str, run_id: str) -> Run | None:
    """The parent run ``run_id`` if it exists in the experiment, else None."""
    try:
        run = mlflow.get_run(run_id)
    except MlflowException:
        return None
    ok = run.info.experiment_id == exp_id and run.data.tags.get(Tag.ROLE) == Role.PARENT
    return run if ok else None


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    """MLflow's frame of trial runs -> one row per trial with the analysis' column names."""
    status = _column(runs, f"tags.{Tag.STATUS}").fillna(runs["status"].map(_MLFLOW_STATUS)).fillna(Status.FAILED)
    checkpoint = _column(runs, f"tags.{Tag.CHECKPOINT}")
    frame = pd.DataFrame({
        "run_id": runs["run_id"],
        "run_name": _column(runs, f"tags.{Tag.RUN_NAME}"),
        "sweep": _column(runs, f"tags.{Tag.SWEEP}"),
        "parent_run_id": _column(runs, f"tags.{Tag.PARENT}"),
        **{col: _column(runs, f"tags.{tag}") for col, tag in RECORD_TAGS.items()},
        "status": status.astype(str),
        "start_time": runs["start_time"],
        # The tag names the checkpoint to use (best.pt, else last.pt) inside the run's artifacts.
        "checkpoint_uri": (runs["artifact_uri"].str.rstrip("/") + "/" + checkpoint.fillna("")).where(
            checkpoint.notna(), None),
        "artifact_uri": runs["artifact_uri"],
        "has_lam_mu": (_column(runs, f"params.{NUMERIC_PARAMS['lam']}").notna()
                       & _column(runs, f"params.{NUMERIC_PARAMS['mu']}").notna()),
    })
    for col, key in {**TEXT_PARAMS, **NUMERIC_PARAMS}.items():
        frame[col] = _column(runs, f"params.{key}")
    for col, key in ITEMS.items():
        frame[f"items_{col}"] = _column(runs, f"tags.{items_tag(key)}")
    frame["items_epoch"] = pd.to_numeric(_column(runs, f"tags.{Tag.ITEMS_EPOCH}"), errors="coerce")
    frame["objective_def"] = _column(runs, f"tags.{Tag.OBJECTIVE}")
    # A finalist's retrain with a new seed (sweep.confirm), not a trial the search chose.
    frame["retrain"] = frame["trial_id"].fillna("").astype(str).str.startswith(RETRAIN_TRIAL_PREFIX)
    for col, key in METRICS.items():
        frame[col] = pd.to_numeric(_column(runs, f"metrics.{key}"), errors="coerce")
    for col in INTERVALS:  # logged at the same steps as the metric, so the latest values belong together
        for end, key in (("lo", keys.lo_key(METRICS[col])), ("hi", keys.hi_key(METRICS[col]))):
            frame[f"{col}_{end}"] = pd.to_numeric(_column(runs, f"metrics.{key}"), errors="coerce")
    # A trial's settings without its seed (a hash of its other params): the seeds of one point share it.
    params = sorted(c for c in runs.columns if c.startswith("params.") and c != f"params.{NUMERIC_PARAMS['seed']}")
    settings = runs[params].astype(str).agg("|".join, axis=1) if params else runs["run_id"]
    frame["config_key"] = settings.map(lambda text: hashlib.sha1(text.encode()).hexdigest()[:12])
    # Curve metrics (density ratios, pixel perturbation, ...) keep their MLflow key as column name.
    known = {f"metrics.{k}" for key in METRICS.values() for k in (key, keys.lo_key(key), keys.hi_key(key))}
    curves = [c for c in runs.columns if c.startswith("metrics.") and c not in known]
    return pd.concat([frame, runs[curves].rename(columns=lambda c: c.removeprefix("metrics."))], axis=1)


def _validate(frame: pd.DataFrame, scope: str) -> None:
    """Each row must be a :class:`TrialRecord` (e.g. a status the sweep writes)."""
    fields = [f for f in TrialRecord.model_fields if f in frame.columns]
    rows = frame[fields].astype(object).where(frame[fields].notna(), None)
    for row in rows.to_dict("records"):
        try:
            TrialRecord.model_validate(row)
        except ValidationError as e:
            problem = e.errors()[0]
            raise AnalysisError(f"trial run {row['run_name']!r} in {scope} is not a sweep trial record: "
                                f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None


def load(experiment: str, tracking_uri: str | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """One row per trial of ``experiment`` (of the sweep ``parent_run_id`` when given).

    Columns: the fields of :class:`~sweep.record.TrialRecord` (``run_id, run_name, sweep,
    parent_run_id, key, trial_id, status, attempts, loss, lam, mu, seed, checkpoint_uri``, ...:
    ``checkpoint_uri`` is best.pt, else last.pt, else None, as tag ``trial.checkpoint`` names it),
    ``sigma, epochs, epochs_done``, the metrics of :data:`METRICS` under their short names (NaN when
    a run did not log them) and every other logged metric under its MLflow key. Numbers are
    numbers. Raises AnalysisError for an unknown experiment or sweep, no trial with status
    ``finished``, trials without λ/μ params, or a row that is no valid trial record.
    """
    mlflow = client(tracking_uri)
    exp_id = experiment_id(mlflow, experiment)
    where = f"tags.`{Tag.ROLE}` = '{Role.TRIAL}'"
    scope = f"MLflow experiment {experiment!r}"
    if parent_run_id is not None:
        parent = _parent(mlflow, exp_id, parent_run_id)
        if parent is None:
            raise AnalysisError(f"no sweep (parent run) with id {parent_run_id!r} in {scope}")
        where += f" and tags.`{Tag.PARENT}` = '{parent_run_id}'"
        scope = f"sweep {parent.data.tags.get(Tag.SWEEP, parent_run_id)!r} of {scope}"
    runs = _search(mlflow, exp_id, where, ["attributes.start_time ASC"])
    if runs.empty:
        raise AnalysisError(f"no trial runs (tag {Tag.ROLE}={Role.TRIAL}) in {scope}")
    frame = _frame(runs)
    counts = frame["status"].value_counts()
    if counts.get(Status.FINISHED, 0) == 0:
        seen = ", ".join(f"{n} {s}" for s, n in counts.items())
        raise AnalysisError(f"no finished trials in {scope} ({seen})")
    if not frame["has_lam_mu"].all():
        missing = frame.loc[~frame["has_lam_mu"], "run_name"].tolist()
        raise AnalysisError(f"{len(missing)} trial(s) in {scope} have no loss.lam/loss.mu params "
                            f"(e.g. {missing[0]!r}); were they written by the sweep?")
    frame = frame.drop(columns="has_lam_mu")
    for col in NUMERIC_PARAMS:
        raw = frame[col]
        frame[col] = pd.to_numeric(raw, errors="coerce")
        if col in AXES:  # a cell's coordinates: a run whose λ or μ is no number would drop out of Table 2
            bad = frame[col].isna() & raw.notna()
            if bad.any():
                row = frame.loc[bad].iloc[0]
                raise AnalysisError(f"{int(bad.sum())} trial(s) in {scope} have a non-numeric {NUMERIC_PARAMS[col]} "
                                    f"param (e.g. run {row['run_name']!r}, id {row['run_id']}: {raw[bad].iloc[0]!r}); "
                                    "were they written by the sweep?")
    # Int64 (nullable): seeds and epoch counts are integers, possibly missing.
    for col in ("seed", "epochs", "epochs_done", "attempts"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
    frame["best_objective"] = pd.to_numeric(frame["best_objective"], errors="coerce")
    frame = frame.reset_index(drop=True)
    _validate(frame, scope)
    return frame


def completed(frame: pd.DataFrame, include_stopped: bool = False) -> pd.Series:
    """Mask of trials that ran to the end: status finished and all configured epochs done.

    With ``include_stopped``, trials stopped early (status ``stopped``, or finished with fewer
    epochs than configured) count too; diverged, failed and running trials never do.
    """
    if include_stopped:
        return frame["status"].isin([Status.FINISHED, Status.STOPPED])
    full = (frame["epochs_done"].isna() | frame["epochs"].isna() | (frame["epochs_done"] >= frame["epochs"]))
    return (frame["status"] == Status.FINISHED) & full.fillna(True).astype(bool)


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


# What a trial without the tag trial.selection_split (written before validation splits) chose by.
UNTAGGED = "untagged"


def _groups(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, pd.DataFrame]:
    """The frame's rows grouped by ``columns``, a missing value its own group."""
    keys_ = frame[columns].astype(object).where(frame[columns].notna(), None)
    return {key: frame.loc[rows.index] for key, rows in keys_.groupby(columns, dropna=False, sort=False)}


def _sweeps_of(rows: pd.DataFrame) -> str:
    names = sorted(rows["sweep"].dropna().astype(str).unique()) if "sweep" in rows.columns else []
    return f" of sweep {', '.join(map(repr, names))}" if names else ""


def selection_split(frame: pd.DataFrame) -> str | None:
    """The one split the trials selected by (``val`` or ``test``), None for a frame without the tag.

    Raises AnalysisError naming the splits when the trials mix them: a ranking or front over runs
    that chose by different data compares an unbiased number with an optimistically biased one.
    """
    if "selection_split" not in frame.columns or frame["selection_split"].isna().all():
        return None
    splits = frame["selection_split"].fillna(UNTAGGED).astype(str)
    if splits.nunique() > 1:
        parts = [f"{split}: {len(rows)} trial(s){_sweeps_of(frame.loc[rows.index])}"
                 for split, rows in splits.groupby(splits, sort=True)]
        raise AnalysisError("these trials selected on different splits (" + "; ".join(parts) + "), so their "
                            "rankings are not comparable; analyse one sweep (--sweep NAME) or one split at a time")
    return str(splits.iloc[0])


def check_judges(frame: pd.DataFrame) -> None:
    """Refuse GAN-test numbers from different judges (AnalysisError naming each judge).

    GAN-test is the judge's accuracy on a model's samples, so two judges (another architecture,
    another training) give numbers on different scales. Trials without GAN-test are not checked.
    """
    if "gan_test" not in frame.columns or "judge" not in frame.columns:
        return
    scored = frame[frame["gan_test"].notna()]
    columns = [c for c in ("judge", "judge_arch") if c in scored.columns]
    groups = _groups(scored, columns)
    if len(groups) > 1:
        names = []
        for key, rows in groups.items():
            judge, arch = (list(key) + [None])[:2]
            names.append(f"judge run {judge or 'unknown'} ({arch or 'arch unknown'}): "
                         f"{len(rows)} trial(s){_sweeps_of(rows)}")
        raise AnalysisError("GAN-test of these trials came from different judges (" + "; ".join(names)
                            + "); GAN-test is only comparable under one judge: analyse one sweep (--sweep NAME)")


def check_comparable(frame: pd.DataFrame, gan_test: bool = True) -> str | None:
    """Both checks before ranking or comparing trials: one selection split, and (when
    ``gan_test``) one judge. Returns the split (None: untagged trials)."""
    split = selection_split(frame)
    if gan_test:
        check_judges(frame)
    return split


def selection_accuracy(split: str | None) -> str:
    """The accuracy column the trials were selected by: ``val_acc``, or ``test_acc`` for trials that
    selected on test (tagged ``test``, or untagged: written before validation splits existed)."""
    return "val_acc" if split == SelectionSplit.VAL else "test_acc"


def selection_notice(split: str | None) -> str | None:
    """The loud line for trials that selected on the test set; None for ``val``."""
    if split == SelectionSplit.VAL:
        return None
    if split == SelectionSplit.TEST:
        return ("SELECTED ON THE TEST SET: these trials trained on the whole training set (trainer.data.val_size: "
                "0, as the paper did) or chose by a test-image metric, so eval/objective, ASHA, Optuna and best.pt "
                "used test data: their test numbers are optimistically biased")
    return ("SELECTED ON THE TEST SET (probably): these trials carry no trial.selection_split tag, so they were "
            "written before validation splits existed, when eval/objective and best.pt read test accuracy")


def check_not_test(split: str | None, *columns: str) -> None:
    """Refuse ranking trials selected on validation by a test-set column (AnalysisError)."""
    test = [c for c in columns if c in TEST_COLUMNS]
    if test and split == SelectionSplit.VAL:
        raise AnalysisError(f"{', '.join(test)} is test-set data and cannot choose (a front or a ranking is a "
                            "selection): use val_acc; test accuracy is reported beside it in front.csv")


# Which interval a number carries, said wherever one is drawn or printed.
SEEDS_INTERVAL = "Student's t over the seeds"  # several training seeds: the spread between them
OWN_INTERVAL = "the run's own (Wilson over images or samples, propagated for the objective)"  # one seed


def interval_of(rows: pd.DataFrame, column: str) -> tuple[Interval, str]:
    """``column`` over ``rows`` (one point's seeds) with its 95 % interval, and which interval it is.

    Several values: their mean with :func:`trainer.stats.seeds_interval` (:data:`SEEDS_INTERVAL`);
    one: the value with its logged ``<column>_lo``/``_hi`` (:data:`OWN_INTERVAL`; NaN ends when
    none was logged); none: NaN.
    """
    done = rows[rows[column].notna()] if column in rows.columns else rows.iloc[:0]
    if len(done) >= 2:
        return seeds_interval(done[column].astype(float).tolist()), SEEDS_INTERVAL
    if len(done) == 1:
        row = done.iloc[0]
        lo, hi = (float(row[f"{column}_{end}"]) if f"{column}_{end}" in done.columns else float("nan")
                  for end in ("lo", "hi"))
        return Interval(float(row[column]), lo, hi), OWN_INTERVAL
    return Interval(float("nan"), float("nan"), float("nan")), OWN_INTERVAL
