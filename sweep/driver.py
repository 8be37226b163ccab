"""The sweep once its command line is good, as its stages (``python -m sweep.run`` calls :func:`run`):

    checks and Ray  sweep.checks.prepare      everything that can refuse it (exit 2), then Ray
    judge           sweep.judge_stage         the GAN-test judge, trained once and cached in MLflow
    trials          sweep.trials.run          every point on Ray Tune, settled in MLflow
    confirm         sweep.confirm.run_stage   the finalists on fresh draws (and new seeds), the verdict
    report          sweep.finish.finish       the summary, Table 2 and the front, the parent run closed

Each stage takes what the earlier ones found and returns its own result; this module only calls
them in order and turns a stop (:mod:`sweep.stopping`) or a failure into the exit status.

Kept apart from :mod:`sweep.cli` and :mod:`sweep.run`, which parse the command line and load the
config, so that ``--help`` and a bad flag or config answer at once, without importing torch,
MLflow and Ray.
"""

from __future__ import annotations

import argparse
import sys
import time

from sweep import confirm, kill_points, preflight, stopping, store_checks, tracking, trials
from sweep.checks import CheckedSweep, prepare
from sweep.cli import fail
from sweep.config import SweepConfig
from sweep.finalists import Confirmation
from sweep.finish import finish
from sweep.judge_stage import ensure_judge
from sweep.report import Phases
from sweep.stopping import Interrupted
from trainer.config import ConfigError


def run(args: argparse.Namespace, cfg: SweepConfig) -> int:
    """Run the sweep of a parsed command line and its loaded config (:func:`sweep.cli.load_config`);
    returns the exit status (0 done, 1 some trials failed, 2 bad input, 128 + n for signal n)."""
    phases = Phases()
    stopping.install()
    before, since = store_checks.store_files(cfg), time.time()  # what of a local MLflow store exists now
    try:
        plan = prepare(args, cfg, phases)
    except (ConfigError, preflight.PreflightError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        if "sweep.engine.session" in sys.modules:  # a half-started local Ray would outlive the driver
            stopping.quietly(sys.modules["sweep.engine.session"].stop)
        started = "ray start" in phases.seconds or "checks" in phases.seconds  # the checks had passed
        where = "while Ray started" if started else "during the checks"
        return Interrupted(cfg, args, f"{where}: nothing was written").exit()
    discard = False
    try:
        return execute(plan, phases)
    except Interrupted as e:
        return e.exit()
    except Exception as e:
        discard = store_checks.nothing_kept(plan.cfg, plan.uri, plan.sweep_dir, plan.parent_id)
        if discard:  # e.g. the dataset's download failed in the judge stage
            kept = store_checks.discard_new_store(plan.cfg, plan.uri, before, since)
            if isinstance(e, ConfigError):  # bad input only the judge stage met (e.g. unreadable data files)
                return fail(f"{e} (found in the judge stage, before any trial; {kept})")
            print(f"sweep {plan.cfg.name!r} failed before any trial ran and {kept}; once the cause below "
                  "is fixed, the same command starts it again", file=sys.stderr, flush=True)  # fmt: skip
        raise
    finally:
        from sweep.engine import session  # prepare() imported it: Ray is up

        stopping.quietly(session.stop)
        if plan.lock is not None:
            plan.lock.release(discard=discard)  # nothing kept: the name is free again


def execute(plan: CheckedSweep, phases: Phases) -> int:
    """The stages after the checks: judge, parent run, trials, confirmation, report."""
    from sweep.engine import session

    cfg, args = plan.cfg, plan.args
    mc = tracking.client(plan.uri)
    # A GPU judge trains on a worker (the head is often CPU-only); the quickstart's on the driver.
    remote = (lambda fn: session.run_task(fn, cfg)) if cfg.resources.gpus > 0 else None
    try:
        stopping.check()  # a Ctrl-C pressed while prepare() finished
        with phases("judge"):
            judge_run = ensure_judge(cfg, plan.uri, plan.artifact_root, remote)
        stopping.check()
    except KeyboardInterrupt:
        kept = ("in the judge stage: nothing new was written" if plan.parent_id
                else "in the judge stage: no trial had started and nothing was written")  # fmt: skip
        # The driver took the sweep's lock in prepare(), so the name is taken: --resume continues.
        raise Interrupted(cfg, args, kept, resume=True) from None
    experiment_id, parent_id = tracking.open_parent(
        mc, cfg.experiment_name, plan.artifact_root, cfg.name, cfg.model_dump(mode="json"), plan.parent_id
    )
    kill_points.kill_point("parent")
    tracking.write_view_state(mc, experiment_id)
    try:
        found = trials.run(plan, phases, mc, experiment_id, parent_id, judge_run)
        confirmation = Confirmation([], None, None, retrained=False)
        if cfg.confirm.enabled:
            with phases("confirm"):
                sweep = confirm.ConfirmInput(cfg, plan.uri, experiment_id, parent_id, judge_run, found.ctx)
                confirmation = confirm.run_stage(sweep, found.rows)
            stopping.check()
        return finish(plan, phases, mc, experiment_id, parent_id, found, confirmation)
    except KeyboardInterrupt:
        # Outside Tune's own Ctrl-C handling (before the trials, in the analysis, a second Ctrl-C).
        kept = ""
        if "confirm" in phases.seconds and "analysis" not in phases.seconds:
            kept = "in the confirmation: every trial had ended and is kept, with the finalists confirmed so far"
        elif "trials" in phases.seconds:
            kept = "in the analysis: every trial had ended and is kept"
        raise trials.close_interrupted(plan, mc, experiment_id, parent_id, kept) from None
