"""The trials stage: every point's trial on Ray Tune, then settled in MLflow.

:func:`run` builds what each trial needs (:class:`sweep.trial.SweepContext`), enters the warm
start's trials, runs (or resumes) the Tuner with Ray's health watched, decides each trial's final
status by the one rule (:func:`sweep.record.final_status`) and closes the trials' MLflow runs by
it. It returns :class:`Trials`, or raises :class:`sweep.stopping.Interrupted` with what was kept
when Tune stopped on Ctrl-C, SIGTERM or SIGHUP (:func:`close_interrupted`, which the driver uses
too); :func:`ray_lost` ends the sweep when the local Ray dies under its trials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import kill_points, stopping, tracking
from sweep.checks import CheckedSweep
from sweep.cli import rerun_command
from sweep.config import SweepConfig
from sweep.points import grid_points, point_names
from sweep.record import Status, final_status
from sweep.report import Phases, point_of
from sweep.state import study_url
from sweep.trial import SweepContext
from trainer import keys


@dataclass
class Trials:
    """What the trials stage found."""

    rows: list[dict[str, Any]]  # one per Tune trial: trial_id, config, metrics, error, status
    ctx: SweepContext  # what every trial was given (the confirmation's retrains reuse it)
    missing: list[str]  # grid points with no trial in Tune's results, by name: the sweep is not done
    stalled: bool  # ended by the watchdog (nothing ran, nothing was proposed)


def _absolute_paths(cfg: SweepConfig) -> dict[str, Any]:
    # Tune runs trials in their own folders, so relative data paths would break there.
    base = cfg.trainer.model_dump()
    if "://" not in base["data"]["data_dir"]:
        base["data"]["data_dir"] = str(Path(base["data"]["data_dir"]).resolve())
    return base


def _study_storage(cfg: SweepConfig, storage: str) -> str:
    url = study_url(cfg, storage)
    if url.startswith("sqlite:///") and not cfg.search.storage:  # sqlite creates the file, not its folder
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return url


def context(plan: CheckedSweep, experiment_id: str, parent_id: str, judge_run: str | None) -> SweepContext:
    """What every trial of the sweep is given, its grid's points keyed by identity (two points
    that print alike stay two)."""
    cfg = plan.cfg
    base = _absolute_paths(cfg)
    grid = grid_points(cfg.search)
    is_grid = cfg.search.method == "grid"
    return SweepContext(
        sweep=cfg.name,
        tracking_uri=plan.uri,
        experiment_id=experiment_id,
        parent_id=parent_id,
        base=base,
        objective=cfg.objective,
        judge_run=judge_run,
        threads=cfg.trial_threads,
        points={p.key: p for p in grid} if is_grid else {},
        names=point_names(base, grid) if is_grid else {},
        seed=cfg.search.seeds[0],
    )


def run(plan: CheckedSweep, phases: Phases, mc: Any, experiment_id: str, parent_id: str, judge_run: str | None) -> Trials:
    """Run (or resume) the sweep's trials and settle them in MLflow."""
    from sweep.engine import session, tuner

    cfg, args = plan.cfg, plan.args
    ctx = context(plan, experiment_id, parent_id, judge_run)
    study = _study_storage(cfg, plan.storage) if cfg.search.method == "optuna" else ""
    if args.resume and cfg.search.method == "optuna":
        from sweep.search import fail_stale_trials  # imports Optuna, as the search does

        stale = fail_stale_trials(cfg.name, study)
        if stale:
            print(f"optuna: marked {stale} trial(s) left running by the killed driver as failed")
    print(f"sweep {cfg.name!r}: {'resuming' if args.resume else 'starting'}; MLflow parent run {parent_id}", flush=True)
    if cfg.search.warm_start:
        from sweep import warmstart

        warmstart.enter(cfg, mc, parent_id, cfg.name, study, *plan.warm)
    with phases("trials"):
        # A sweep killed before Tune saved its state resumes as a fresh Tuner under the same parent.
        restore = args.resume and tuner.can_restore(plan.sweep_dir)
        stop_watching = session.watch_local(lambda why: ray_lost(plan, experiment_id, parent_id, why))
        try:
            rows = tuner.fit(cfg, ctx, plan.storage, study, restore)
        finally:
            stop_watching()
    kill_points.kill_point("fitted")
    for row in rows:
        row["status"] = final_status(row["metrics"].get(keys.STATUS), bool(row["error"]))
    if tuner.interrupted() or stopping.pressed():  # Tune caught the Ctrl-C, stopped the trials and saved its state
        total = len(ctx.points) if cfg.search.method == "grid" else cfg.search.n_trials
        kept = kept_line(rows, list(ctx.names.values()), total)
        raise close_interrupted(plan, mc, experiment_id, parent_id, kept)
    tracking.settle_trials(mc, experiment_id, parent_id, {r["trial_id"]: r["status"] for r in rows})
    missing = missing_points(rows, ctx) if cfg.search.method == "grid" else []
    return Trials(rows, ctx, missing, tuner.stalled())


def kept_line(rows: list[dict[str, Any]], points: list[str], total: int) -> str:
    """What an interrupted Tune run kept, by point: ended, mid-training, not started.

    ``points``: the grid's point names (Tune creates a grid's trials only as slots free up, so
    the result grid may lack the last ones); ``total``: the trials the sweep runs.
    """
    done = [r for r in rows if r["status"] in (Status.FINISHED, Status.DIVERGED, Status.FAILED)]
    begun = sorted(point_of(r) for r in rows if r not in done and keys.EPOCH in r["metrics"])
    unseen = set(points) - {point_of(r) for r in rows}
    fresh = sorted(unseen | {point_of(r) for r in rows if r not in done and keys.EPOCH not in r["metrics"]})
    parts = [f"during the trials: kept {len(done)} ended trial(s)"]
    if begun:
        parts.append(f"{len(begun)} stopped mid-training, to continue from their last epoch ({', '.join(begun)})")
    waiting = max(len(fresh), total - len(done) - len(begun))
    if waiting:
        parts.append(f"{waiting} not started" + (f" ({', '.join(fresh)})" if fresh else ""))
    return "; ".join(parts)


def missing_points(rows: list[dict[str, Any]], ctx: SweepContext) -> list[str]:
    """The grid's points (by key) with no trial among Tune's result ``rows``, by name: a grid
    sweep never ends as done without every point."""
    seen = {ctx.point_of(r["config"]).key for r in rows if r.get("config")}
    return sorted(ctx.names.get(key, key) for key in ctx.points if key not in seen)


def close_interrupted(plan: CheckedSweep, mc: Any, experiment_id: str, parent_id: str, kept: str) -> stopping.Interrupted:
    """Close the sweep's MLflow runs as KILLED and say what was kept; --resume reopens them (a
    parent run without Ray state resumes as a fresh Tuner under the same parent)."""
    from sweep.engine import tuner

    cfg, args = plan.cfg, plan.args
    if not kept and not tuner.can_restore(plan.sweep_dir):
        kept = "before Ray saved any trial: only the MLflow parent run was kept"
    note = f"Interrupted ({stopping.cause()}){': ' + kept if kept else ''}. Continue with `{rerun_command(cfg, args)}`."
    stopping.quietly(lambda: tracking.interrupt_parent(mc, experiment_id, parent_id, note))
    return stopping.Interrupted(cfg, args, kept or f"(MLflow parent run {parent_id} kept)", resume=True)


def ray_lost(plan: CheckedSweep, experiment_id: str, parent_id: str, why: str) -> None:
    """The local Ray died under the trials (a killed raylet): close the runs as KILLED, print one
    line with the cause and the command that continues, exit 1. Runs on the watching thread,
    because Ray's core worker ends the process soon after without returning to Python."""
    from sweep.engine import session

    cfg, args = plan.cfg, plan.args
    try:
        note = f"Stopped: {why}. Continue with `{rerun_command(cfg, args)}`."
        tracking.interrupt_parent(tracking.client(plan.uri), experiment_id, parent_id, note)
        kept = "its runs are closed as KILLED, ended trials and per-epoch checkpoints kept"
    except Exception as e:  # noqa: BLE001 - the line and the exit must happen regardless
        kept = f"its runs could not be closed ({type(e).__name__}); ended trials and checkpoints kept"
    if stopping.pressed():  # e.g. SIGHUP to the whole process group: Ray's processes died of it too
        why = f"{why} after {stopping.cause()}"
    print(f"\nsweep {cfg.name!r} stopped: {why}; {kept}; continue with: {rerun_command(cfg, args)}", flush=True)
    session.kill_local()
    os._exit(128 + stopping.signal_number() if stopping.pressed() else 1)
