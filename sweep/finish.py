"""The last stage: what the sweep found, told once it is all in MLflow.

:func:`finish` pools the training seed's variance over the sweep's runs (logged on the parent),
prints the summary (:mod:`sweep.report`), writes Table 2 and the Pareto front, closes the parent
run with the best point and its description, and prints where the results are; it returns the
exit status.
"""

from __future__ import annotations

from typing import Any

from sweep import kill_points, report, stopping, tracking
from sweep.checks import CheckedSweep
from sweep.finalists import Confirmation
from sweep.record import POOLED_PREFIX, Status, Tag
from sweep.report import Phases
from sweep.trials import Trials
from trainer.pooled import Pooled


def _pooled(mc: Any, uri: str, experiment: str, parent_id: str) -> dict[str, Pooled]:
    """The training seed's pooled run-to-run variance per column over the sweep's runs (points with
    >= 2 seeds: several search seeds, or the confirmation's retrains), logged on the parent as
    ``pooled/<column>_sd`` and ``_df``; {} when no point has two seeds (or no trial finished)."""
    from analysis.runs import AnalysisError, load
    from analysis.verdicts import pooled_all

    try:
        pools = pooled_all(load(experiment, uri, parent_id))
    except AnalysisError:
        return {}
    metrics = {}
    for column, pool in pools.items():
        metrics[f"{POOLED_PREFIX}{column}_sd"], metrics[f"{POOLED_PREFIX}{column}_df"] = pool.sd, float(pool.df)
    if metrics:
        tracking.log_parent_metrics(mc, parent_id, metrics)
    return pools


def _run_of(mc: Any, experiment_id: str, parent_id: str, trial_id: str | None) -> str | None:
    """The MLflow run of a Tune trial of this sweep (by the run's tag trial.id, never its name)."""
    if trial_id is None:
        return None
    runs = tracking.child_runs(mc, experiment_id, parent_id)
    return next((r.info.run_id for r in runs if r.data.tags.get(Tag.TRIAL_ID) == trial_id), None)


def _analysis(experiment: str, name: str, uri: str, parent_id: str, best_run: str | None) -> None:
    """Table 2 and Pareto front into the parent run."""
    from analysis import default_out_dir, report_sweep

    out = default_out_dir(experiment, name).resolve()  # the same folder as the analysis CLI's
    print(f"analysis: Table 2, Pareto front and figures of sweep {name!r} ...", flush=True)
    try:
        report_sweep(experiment, parent_id, out, uri, best_run=best_run)
    except Exception as e:  # the sweep's results are in MLflow already; a failed report must not hide that
        print(f"analysis: failed ({type(e).__name__}: {e}); run it by hand with the command below")
        return
    print(f"analysis: Table 2 and Pareto front written to {out} and logged to the parent run")


def finish(
    plan: CheckedSweep, phases: Phases, mc: Any, experiment_id: str, parent_id: str, trials: Trials,
    confirmation: Confirmation,
) -> int:  # fmt: skip
    """Report and close the sweep; 0 done, 1 when a trial failed, the watchdog ended the search or
    a grid point has no trial."""
    cfg, rows = plan.cfg, trials.rows
    pools = _pooled(mc, plan.uri, cfg.experiment_name, parent_id)
    outcome = report.Outcome(rows, confirmation, cfg.objective.split, pools)
    report.print_summary(outcome)
    failed = sum(r["status"] == Status.FAILED for r in rows)
    best_run = _run_of(mc, experiment_id, parent_id, outcome.best_trial())
    if cfg.analysis:
        with phases("analysis"):
            _analysis(cfg.experiment_name, cfg.name, plan.uri, parent_id, best_run)
        stopping.check()
    summary, extra = report.best_metrics(outcome)
    if extra:
        tracking.log_parent_metrics(mc, parent_id, extra)
    tracking.finish_parent(
        mc, parent_id, trials=len(rows), failed=failed, counts=report.counts(rows), best=summary or None,
        best_run=best_run, note=report.note(cfg.name, outcome),
    )  # fmt: skip
    kill_points.kill_point("analysis")
    print(f"\nsweep {cfg.name!r} done in {phases.summary()}: {len(rows)} trials, {failed} failed")
    if trials.missing:
        print(f"sweep {cfg.name!r}: {len(trials.missing)} of {len(trials.ctx.points)} points have no trial in Tune's "
              f"results ({', '.join(trials.missing)}); Tune did not run them (its state was not what the sweep "
              "saved?); their results are missing, so the sweep is not done", flush=True)  # fmt: skip
    report.print_next_steps(cfg, plan.uri, parent_id, plan.storage, plan.args, experiment_id)
    return 1 if failed or trials.stalled or trials.missing else 0
