"""Warm start: an Optuna search learns from earlier sweeps' trials without running them again.

``search.warm_start`` names earlier sweeps; :func:`collect` reads their trials from MLflow before
anything is written (a trial whose training config differs from this sweep's in anything but the
searched parameters refuses the sweep, exit 2), and :func:`enter` adds the finished and diverged
ones to the new study as completed Optuna trials, then records them on the parent run.

What a trial enters with is what Tune would have told Optuna had it run in this sweep: the
objectives computed from its last logged metrics with *this* sweep's objective config; a diverged
trial enters with :data:`sweep.objective.WORST` on every objective (every objective is a
maximized fraction), so the sampler learns where not to go (Optuna's samplers skip FAIL
trials). A trial the scheduler stopped enters as PRUNED with its last logged objective at the
epoch it reached, as the searcher tells Optuna of this sweep's stopped trials (one objective
only; Optuna has no pruned trials in a multi-objective study). Failed and running trials are left
out: they have no value. A trial of another loss than this sweep's (the baseline point) is skipped
with a note: it lies outside the searched space. The source runs are not copied, so the analysis
of the earlier sweep still shows them, diverged or not.

Each added trial carries the user attribute :data:`SOURCE_ATTR` (its MLflow run id); a resumed
sweep skips runs already in the study, so nothing is added twice. A source's runs on seeds outside
its ``search.seeds`` (replicates of ``search.replicate``, confirmation retrains) are left out with a
note: each point enters once, with its search seed, as the rule that every other setting but the
searched ones must match requires.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweep import tracking
from sweep.config import SearchConfig, SweepConfig
from sweep.objective import WORST, objective_value, worst_value
from sweep.points import Point, apply_point
from sweep.preflight import PreflightError, sqlite_missing
from sweep.record import SelectionSplit, Status, Tag
from trainer import keys
from trainer.config import flatten

SOURCE_ATTR = "warm_start.run_id"  # Optuna user attribute: the MLflow run a trial came from
# Trainer fields that say where or on what a trial ran, not what it trained: they may differ.
# eval.label only titles the pictures (the trial sets its point name).
RUN_ONLY = frozenset({"data.data_dir", "data.download", "device", "eval.judge", "eval.label"})
ENTERED = (Status.FINISHED, Status.DIVERGED)  # the statuses with a final value


@dataclass(frozen=True)
class WarmTrial:
    """One earlier trial as it enters the study."""

    run_id: str
    sweep: str
    status: str  # finished | diverged
    params: dict[str, float]  # searched key -> value
    values: list[float]  # one per search.objectives, in order (stopped: the last evaluated one)
    epoch: int | None = None  # stopped: the epoch it reached (its value's step)


def distributions(search: SearchConfig) -> dict[str, optuna.distributions.FloatDistribution]:
    """The Optuna distribution of each searched key (shared with the searcher in sweep.search)."""
    return {k: optuna.distributions.FloatDistribution(r.low, r.high, log=r.log) for k, r in search.space.items()}


def _refuse(message: str) -> PreflightError:
    return PreflightError(f"search.warm_start: {message}")


def _values(cfg: SweepConfig, run: Run, status: str) -> list[float]:
    """The trial's values for this sweep's objectives (a diverged trial: the value a diverged
    trial of this sweep reports, its objective's worst, WORST for a plain metric)."""
    if status == Status.DIVERGED:
        return [worst_value(cfg.objective) if key == keys.OBJECTIVE else WORST for key in cfg.search.objectives]
    metrics: dict[str, Any] = {**run.data.metrics, keys.STATUS: status}
    out = []
    for key in cfg.search.objectives:
        value = objective_value(cfg.objective, metrics) if key == keys.OBJECTIVE else metrics.get(key)
        if value is None or not math.isfinite(float(value)):
            needs = f"{key} ({cfg.objective.name} objective)" if key == keys.OBJECTIVE else key
            raise _refuse(f"run {run.info.run_id} ({run.info.run_name}) logged no value for {needs}")
        out.append(float(value))
    return out


def _check_config(cfg: SweepConfig, run: Run, sweep: str, searched: dict[str, float]) -> None:
    """Refuse a trial whose trainer config differs from this sweep's outside the searched keys."""
    expected = {k: str(v) for k, v in flatten(apply_point(cfg.trainer.model_dump(), Point(
        tuple(sorted(searched.items())), cfg.search.seeds[0]))).items()}
    logged = run.data.params
    # Runs from before the tag selected on test (they had no validation split).
    split = run.data.tags.get(Tag.SELECTION_SPLIT, SelectionSplit.TEST)
    if split != cfg.objective.split:
        raise _refuse(
            f"run {run.info.run_id} ({run.info.run_name}) of sweep {sweep!r} selected on its {split} split, "
            f"this sweep on {cfg.objective.split}: their objective values are not comparable"
        )
    for key in sorted((set(expected) | set(logged)) - set(cfg.search.space) - RUN_ONLY):
        if expected.get(key) != logged.get(key):
            raise _refuse(
                f"run {run.info.run_id} ({run.info.run_name}) of sweep {sweep!r} was trained with "
                f"{key}={logged.get(key, '(unset)')}, this sweep with {key}={expected.get(key, '(unset)')}; "
                f"only the searched parameters ({', '.join(cfg.search.space)}) may differ"
            )


def _check_judge(cfg: SweepConfig, parent: Run, sweep: str) -> None:
    """GAN-test values are only comparable under the same judge config."""
    mine = {k: str(v) for k, v in flatten(cfg.model_dump(mode="json")).items() if k == "judge" or k.startswith("judge.")}
    theirs = {k: v for k, v in parent.data.params.items() if k == "judge" or k.startswith("judge.")}
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise _refuse(f"sweep {sweep!r} judged GAN-test with {key}={theirs.get(key, '(unset)')}, "
                          f"this sweep with {key}={mine.get(key, '(unset)')}")


def collect(cfg: SweepConfig, uri: str) -> tuple[list[WarmTrial], int]:
    """The trials of the sweeps in ``search.warm_start`` that enter the study, and how many were
    left out (stopped, failed, running). Reads MLflow only; raises PreflightError (exit 2)."""
    search = cfg.search
    if not search.warm_start:
        return [], 0
    experiment = search.warm_start_experiment or cfg.experiment_name
    if sqlite_missing(uri):
        raise _refuse(f"no MLflow store at {uri}, so no sweep {search.warm_start[0]!r} to start from")
    mc: MlflowClient = tracking.client(uri)
    exp = mc.get_experiment_by_name(experiment)
    if exp is None:
        raise _refuse(f"no MLflow experiment {experiment!r} at {uri} (set search.warm_start_experiment)")
    space = distributions(search)
    trials: list[WarmTrial] = []
    left_out = 0
    for sweep in search.warm_start:
        parent_id = tracking.find_parent(mc, experiment, sweep)
        if parent_id is None:
            raise _refuse(f"no sweep named {sweep!r} in MLflow experiment {experiment!r}")
        parent = mc.get_run(parent_id)
        _check_judge(cfg, parent, sweep)
        own_seeds = _search_seeds(parent)
        skipped = other_seeds = 0
        for run in tracking.search_all(mc, exp.experiment_id, f"tags.`{Tag.PARENT}` = '{parent_id}'"):
            if own_seeds is not None and run.data.params.get("seed") not in own_seeds:
                # A replicate (search.replicate) or a confirmation retrain: another seed of a point
                # the source trained with its own seed, which is what enters.
                other_seeds += 1
                continue
            status = run.data.tags.get(Tag.STATUS)
            pruned = status == Status.STOPPED and len(search.objectives) == 1 and _stopped_value(cfg, run) is not None
            if status not in ENTERED and not pruned:
                left_out += 1
                continue
            if run.data.params.get("loss.kind", cfg.trainer.loss.kind) != cfg.trainer.loss.kind:
                skipped += 1  # a point of another loss (the baseline): outside this search's space
                continue
            missing = [k for k in space if k not in run.data.params]
            if missing:
                raise _refuse(f"run {run.info.run_id} ({run.info.run_name}) of sweep {sweep!r} has no "
                              f"param {missing[0]}, a searched parameter")
            searched = {k: float(run.data.params[k]) for k in space}
            _check_config(cfg, run, sweep, searched)
            for k, value in searched.items():
                if not space[k].low <= value <= space[k].high:
                    raise _refuse(f"run {run.info.run_id} ({run.info.run_name}) has {k}={value:g}, outside "
                                  f"search.space.{k} [{space[k].low:g}, {space[k].high:g}]")
            if pruned:
                trials.append(WarmTrial(run.info.run_id, sweep, str(status), searched, [_stopped_value(cfg, run)],
                                        epoch=int(run.data.metrics.get(keys.EPOCH, 0))))
            else:
                trials.append(WarmTrial(run.info.run_id, sweep, str(status), searched, _values(cfg, run, str(status))))
        if other_seeds:
            print(f"warm start: left out {other_seeds} run(s) of sweep {sweep!r} trained on other seeds than its "
                  "search.seeds (replicates, confirmation retrains): each point enters with its search seed",
                  flush=True)
        if skipped:
            print(f"warm start: skipped {skipped} trial(s) of sweep {sweep!r} with another loss than "
                  f"{cfg.trainer.loss.kind} (such as the baseline point): they are outside this search's space",
                  flush=True)
    return trials, left_out


def _search_seeds(parent: Run) -> set[str] | None:
    """The source sweep's ``search.seeds`` as the strings its runs log (param ``seed``), from its
    parent run's params; None when the parent does not say."""
    logged = parent.data.params.get("search.seeds")
    try:
        return {str(int(s)) for s in json.loads(logged)} if logged else None
    except (ValueError, TypeError):
        return None


def _stopped_value(cfg: SweepConfig, run: Run) -> float | None:
    """The last evaluated objective of a trial the scheduler stopped (None before its first)."""
    value = run.data.metrics.get(keys.OBJECTIVE)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def seed_study(cfg: SweepConfig, study_name: str, storage: str, trials: list[WarmTrial]) -> int:
    """Add ``trials`` to the study (created if new) as completed trials; returns how many were new.

    A trial whose run id is already in the study (a resumed sweep) is skipped.
    """
    objectives = cfg.search.objectives
    # Created the way Ray's OptunaSearch creates it, which then loads it (load_if_exists).
    directions = {"directions": ["maximize"] * len(objectives)} if len(objectives) > 1 else {"direction": "maximize"}
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, **directions)
    present = {t.user_attrs.get(SOURCE_ATTR) for t in study.get_trials(deepcopy=False)}
    space = distributions(cfg.search)
    added = 0
    for t in trials:
        if t.run_id in present:
            continue
        attrs = {SOURCE_ATTR: t.run_id, "warm_start.sweep": t.sweep, "warm_start.status": t.status}
        if t.status == Status.STOPPED:  # as the searcher tells Optuna of a trial the scheduler stopped
            trial = optuna.trial.create_trial(params=t.params, distributions=space, state=optuna.trial.TrialState.PRUNED,
                                              intermediate_values={int(t.epoch or 0): t.values[0]}, user_attrs=attrs)
        else:
            trial = optuna.trial.create_trial(params=t.params, distributions=space, values=t.values, user_attrs=attrs)
        study.add_trial(trial)
        added += 1
    return added


def known_points(study_name: str, storage: str) -> list[dict[str, float]]:
    """The params of the warm-start trials in the study (none when it does not exist yet)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return []
    return [dict(t.params) for t in study.get_trials(deepcopy=False) if SOURCE_ATTR in t.user_attrs]


def same_point(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two points have the same keys and (to 1e-9 relative) the same values."""
    return set(a) == set(b) and all(math.isclose(float(a[k]), float(b[k]), rel_tol=1e-9) for k in a)


def enter(cfg: SweepConfig, mc: MlflowClient, parent_id: str, study_name: str, storage: str,
          trials: list[WarmTrial], left_out: int) -> None:
    """Seed the study with ``trials``, record them on the parent run, and say so."""
    if not cfg.search.warm_start:
        return
    added = seed_study(cfg, study_name, storage, trials)
    tracking.log_warm_start(mc, parent_id, [asdict(t) for t in trials])
    diverged = sum(t.status == Status.DIVERGED for t in trials)
    print(f"warm start: {len(trials)} trial(s) of {', '.join(cfg.search.warm_start)} in the study "
          f"({diverged} diverged, {added} added now, {len(trials) - added} there already; "
          f"{sum(t.status == Status.STOPPED for t in trials)} stopped ones as pruned, {left_out} failed/running "
          "left out); none will run again", flush=True)
