"""The sweep once its command line is good: checks, Ray, the judge, the trials on Ray Tune,
confirmation, analysis, the summary and what to do next (``python -m sweep.run`` calls
:func:`run`).

Kept apart from :mod:`sweep.cli` and :mod:`sweep.run`, which parse the command line and load the
config, so that ``--help`` and a bad flag or config answer at once, without importing torch,
MLflow and Ray.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep import confirm, ctrlc, lock, preflight, report, seams, stores, tracking
from sweep.cli import fail
from sweep.config import SweepConfig, judge_config
from sweep.judge_stage import ensure_judge
from sweep.paths import (
    resolve_artifact_root,
    resolve_storage_path,
    resolve_tracking_uri,
)
from sweep.points import grid_points, point_names
from sweep.record import JUDGES_EXPERIMENT, POOLED_PREFIX, Status, Tag, final_status
from sweep.state import study_url
from sweep.trial import SweepContext
from trainer import keys
from trainer.config import ConfigError, flatten


def _absolute_paths(cfg: SweepConfig) -> dict[str, Any]:
    # Tune runs trials in their own folders, so relative data paths would break there.
    base = cfg.trainer.model_dump()
    if "://" not in base["data"]["data_dir"]:
        base["data"]["data_dir"] = str(Path(base["data"]["data_dir"]).resolve())
    return base


def _check_data_files(cfg: SweepConfig) -> None:
    """Refuse (exit 2) CIFAR files that torchvision's md5 check would reject in the judge stage or a
    trial, the trainer's and the judge's: one line naming the files and what to do. Reads only."""
    from trainer.data import DataError, cifar_integrity_problem

    sections = [("trainer.data", cfg.trainer.data)]
    if cfg.judge is not None and cfg.trainer.eval.enabled and "data" in cfg.judge:
        sections.append(("judge.data", judge_config(cfg).data))
    for prefix, data in sections:
        problem = cifar_integrity_problem(data, prefix)
        if problem:
            raise DataError(problem)


def _study_storage(cfg: SweepConfig, storage: str) -> str:
    url = study_url(cfg, storage)
    if url.startswith("sqlite:///") and not cfg.search.storage:  # sqlite creates the file, not its folder
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return url


def _analysis(cfg: SweepConfig, uri: str, parent_id: str, storage: str, best_run: str | None) -> None:
    """Table 2 and Pareto front into the parent run, when the analysis package offers them."""
    from analysis import default_out_dir, report_sweep

    out = default_out_dir(cfg.experiment_name, cfg.name).resolve()  # the same folder as the analysis CLI's
    print(f"analysis: Table 2, Pareto front and figures of sweep {cfg.name!r} ...", flush=True)
    try:
        report_sweep(cfg.experiment_name, parent_id, out, uri, best_run=best_run)
    except Exception as e:  # the sweep's results are in MLflow already; a failed report must not hide that
        print(f"analysis: failed ({type(e).__name__}: {e}); run it by hand with the command below")
        return
    print(f"analysis: Table 2 and Pareto front written to {out} and logged to the parent run")


def _command(cfg: SweepConfig, args: argparse.Namespace, resume: bool = True) -> str:
    """The shell command that runs this sweep again (``--resume``: continues it), quoted."""
    return (
        f"cd {shlex.quote(str(Path.cwd()))} && python -m sweep.run --config {shlex.quote(args.config)}"
        f" --name {shlex.quote(cfg.name)}"
        + (" --smoke" if args.smoke else "")
        + (" --resume" if resume else "")
        + (f" --address {shlex.quote(args.address)}" if args.address else "")
        + "".join(f" --set {shlex.quote(s)}" for s in args.set)
    )


def _ui(uri: str, experiment_id: str) -> str:
    """How to open the experiment's runs table in the MLflow UI (the sweep's shared view)."""
    if uri.startswith(("http://", "https://")):
        return f"open {tracking.runs_table_url(uri, experiment_id, tracking.VIEW_STATE_KEY)}"
    link = tracking.runs_table_url("http://127.0.0.1:5000", experiment_id, tracking.VIEW_STATE_KEY)
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}\n  then browse {link}"


def _print_next_steps(
    cfg: SweepConfig, uri: str, parent_id: str, storage: str, args: argparse.Namespace, experiment_id: str
) -> None:
    exp, q = cfg.experiment_name, shlex.quote  # every printed command pastes into a shell as is
    ui = _ui(uri, experiment_id)
    uri_flag = f" --tracking-uri {q(uri)}"
    print(
        f"\nResults:\n"
        f"  MLflow:      {uri}  (experiment '{exp}', parent run '{tracking.parent_name(cfg.name)}' = {parent_id})\n"
        f"  Ray results: {storage.rstrip('/')}/{cfg.name}\n"
        f"Open the MLflow UI (the runs table, best first):\n"
        f"  {ui}\n"
        f"Analysis (Table 2 heatmap, Pareto front):\n"
        f"  python -m analysis table2 --experiment {q(exp)}{uri_flag}\n"
        f"  python -m analysis pareto --experiment {q(exp)}{uri_flag}\n"
        f"Continue after an interruption:\n"
        f"  {_command(cfg, args)}"
    )


class Phases:
    """Wall seconds per phase of the run, for the closing line: ``with phases("judge"): ...``."""

    def __init__(self) -> None:
        self.started = time.time()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        mark = time.time()
        try:
            yield
        finally:
            self.seconds[name] = time.time() - mark

    def summary(self) -> str:
        split = ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
        return f"{time.time() - self.started:.0f} s ({split})"


@dataclass
class Plan:
    """A sweep that passed every check, with Ray up: what :func:`execute` runs."""

    args: argparse.Namespace
    cfg: SweepConfig
    uri: str  # MLflow tracking URI
    artifact_root: str | None  # for experiments this sweep creates; None: the server decides
    storage: str  # Ray's storage path
    parent_id: str | None  # the existing parent run (a resumed sweep), else None
    lock: lock.SweepLock | None = field(default=None, repr=False)  # held for the driver's life
    warm: tuple[list, int] = ([], 0)  # sweep.warmstart.collect: trials entering the study, left out


class Interrupted(Exception):
    """Ctrl-C: ``message`` says what was kept; ``resume`` whether ``--resume`` continues it."""

    def __init__(self, cfg: SweepConfig, args: argparse.Namespace, message: str, resume: bool = False):
        super().__init__(message)
        self.cfg, self.cli, self.message, self.resume = cfg, args, message, resume  # (Exception owns .args)

    def line(self) -> str:
        """The one line the driver prints: what was kept and the exact command that continues."""
        by = "" if ctrlc.signal_number() == signal.SIGINT else f"by {ctrlc.cause()} "
        verb = "continue with" if self.resume else "start it again with"
        return f"sweep {self.cfg.name!r} interrupted {by}{self.message}; {verb}: {_command(self.cfg, self.cli, self.resume)}"


def _quietly(fn: Any) -> None:
    """Run a clean-up step with Ctrl-C ignored, so a second Ctrl-C cannot cut it short."""
    previous = ctrlc.ignore()
    try:
        fn()
    finally:
        signal.signal(signal.SIGINT, previous)


def prepare(args: argparse.Namespace, cfg: SweepConfig, phases: Phases) -> Plan:
    """Everything that can refuse the sweep (exit 2): config, names, preflight, Ray, resources.

    Raises ConfigError or PreflightError before anything is written; Ray is up on return.
    """
    with phases("checks"):
        uri = resolve_tracking_uri(cfg)
        local_store = not uri.startswith(("http://", "https://"))
        artifact_root = resolve_artifact_root(cfg) if local_store else None
        storage = resolve_storage_path(cfg)
        preflight.check_dataset(cfg.trainer.data)
        _check_data_files(cfg)  # md5 of CIFAR's files: under a second, before anything is written
        preflight.check_packing(cfg)  # trials per GPU × estimated memory, before Ray starts
        preflight.check_tracking(uri)
        preflight.check_db_driver(uri)
        stores.check_tracking_store(uri, artifact_root)
        stores.check_storage(storage)
        stores.bound_http_retries()
        preflight.check_ray_address(args.address or os.environ.get("RAY_ADDRESS"))
        preflight.check_ray_local(args.address or os.environ.get("RAY_ADDRESS"))
        from sweep.engine import tuner  # Ray is imported only once the input is known good

        sweep_dir = f"{storage.rstrip('/')}/{cfg.name}"

        def check_name() -> str | None:
            parent = None
            if not preflight.sqlite_missing(uri):
                parent = tracking.find_parent(tracking.client(uri), cfg.experiment_name, cfg.name)
            # under the lock, the lock file counts only if a driver made it before this one
            started = tuner.can_restore(sweep_dir) or (held.existed if held else lock.started(sweep_dir))
            preflight.check_name(cfg.name, args.resume, started, parent, sweep_dir)
            if args.resume and parent is not None:  # the same config, or nothing is touched
                stored = tracking.stored_config(tracking.client(uri), parent)
                preflight.check_resume_config(cfg.name, parent, stored, flatten(cfg.model_dump(mode="json")))
            return parent

        held = None
        try:
            lock.check_free(sweep_dir, cfg.name)  # a running driver is named before anything else
            check_name()  # read-only first, so a refused name writes nothing
            held = lock.acquire(sweep_dir, cfg.name)
        except lock.LockHeld as e:
            raise preflight.PreflightError(str(e)) from None
    try:
        return _prepare_locked(args, phases, cfg, uri, artifact_root, storage, check_name, held)
    except BaseException as e:
        if held is not None:
            # Refused (exit 2) or Ctrl-C'd before anything was written: leave nothing behind, so
            # the same command starts it again. Died otherwise: keep the mark.
            held.release(discard=isinstance(e, (ConfigError, preflight.PreflightError, KeyboardInterrupt)))
        raise


def _prepare_locked(
    args: argparse.Namespace,
    phases: Phases,
    cfg: SweepConfig,
    uri: str,
    artifact_root: str | None,
    storage: str,
    check_name: Callable[[], str | None],
    held: lock.SweepLock | None,
) -> Plan:
    """The rest of :func:`prepare`, under the sweep's lock."""
    from sweep.engine import session

    seams.kill_point("locked")
    with phases("checks"):
        parent_id = check_name()  # again under the lock: a driver that held it may have finished
        if args.resume:  # Tune's state, the Optuna study, the MLflow runs: read and cross-checked
            from sweep import state

            for repair in state.check(cfg, uri, f"{storage.rstrip('/')}/{cfg.name}", storage, parent_id):
                print(repair, flush=True)
        if parent_id is not None and tracking.client(uri).get_run(parent_id).info.status == "RUNNING":
            print(f"sweep {cfg.name!r}: its parent run {parent_id} was left RUNNING by a driver that is gone; taking it over")
        from sweep import warmstart  # imports Optuna, as the search does

        warm = warmstart.collect(cfg, uri)  # refuses (exit 2) sources whose training config differs
    with phases("ray start"):
        try:
            session.start(args.address)
            ctrlc.install_stop_signals()  # ray.init replaced the SIGTERM handler
        except ConnectionError as e:
            raise preflight.PreflightError(
                f"--address: cannot join the Ray cluster ({e}); is it up, and does this shell have its "
                "auth token (RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token)?"
            ) from None
        except OSError as e:  # what the checks above cannot foresee; nothing is written yet
            raise preflight.PreflightError(f"Ray could not start ({type(e).__name__}: {e})") from None
        except session.StartTimeout as e:
            raise preflight.PreflightError(
                f"Ray: {e} (SWEEP_RAY_START_TIMEOUT): the machine is too busy now; nothing was written, run the "
                "same command again when it is less loaded, or with a longer SWEEP_RAY_START_TIMEOUT"
            ) from None
    try:
        preflight.check_resources(cfg, session.nodes())
    except preflight.PreflightError:
        session.stop()
        raise
    return Plan(args, cfg, uri, artifact_root, storage, parent_id, held, warm)


def execute(plan: Plan, phases: Phases) -> int:
    """Judge, parent run, trials, analysis; returns 0, or 1 when some trials failed."""
    from sweep.engine import session

    cfg, uri, args = plan.cfg, plan.uri, plan.args
    mc = tracking.client(uri)
    # A GPU judge trains on a worker (the head is often CPU-only); the quickstart's on the driver.
    remote = (lambda fn: session.run_task(fn, cfg)) if cfg.resources.gpus > 0 else None
    try:
        ctrlc.check()  # a Ctrl-C pressed while prepare() finished
        with phases("judge"):
            judge_run = ensure_judge(cfg, uri, plan.artifact_root, remote)
        ctrlc.check()
    except KeyboardInterrupt:
        kept = ("in the judge stage: nothing new was written" if plan.parent_id
                else "in the judge stage: no trial had started and nothing was written")
        # The driver took the sweep's lock in prepare(), so the name is taken: --resume continues.
        raise Interrupted(cfg, args, kept, resume=True) from None
    experiment_id, parent_id = tracking.open_parent(
        mc, cfg.experiment_name, plan.artifact_root, cfg.name, cfg.model_dump(mode="json"), plan.parent_id
    )
    seams.kill_point("parent")
    tracking.write_view_state(mc, experiment_id)
    try:
        return _run_trials(plan, phases, mc, experiment_id, parent_id, judge_run)
    except KeyboardInterrupt:
        # Outside Tune's own Ctrl-C handling (before the trials, in the analysis, a second Ctrl-C).
        kept = ""
        if "confirm" in phases.seconds and "analysis" not in phases.seconds:
            kept = "in the confirmation: every trial had ended and is kept, with the finalists confirmed so far"
        elif "trials" in phases.seconds:
            kept = "in the analysis: every trial had ended and is kept"
        raise _interrupt(plan, mc, experiment_id, parent_id, kept) from None


def _interrupt(plan: Plan, mc: Any, experiment_id: str, parent_id: str, kept: str) -> Interrupted:
    """Close the sweep's MLflow runs as KILLED; --resume reopens them (a parent run without Ray
    state resumes as a fresh Tuner under the same parent)."""
    from sweep.engine import tuner

    cfg, args = plan.cfg, plan.args
    if not kept and not tuner.can_restore(f"{plan.storage.rstrip('/')}/{cfg.name}"):
        kept = "before Ray saved any trial: only the MLflow parent run was kept"
    note = f"Interrupted ({ctrlc.cause()}){': ' + kept if kept else ''}. Continue with `{_command(cfg, args)}`."
    _quietly(lambda: tracking.interrupt_parent(mc, experiment_id, parent_id, note))
    return Interrupted(cfg, args, kept or f"(MLflow parent run {parent_id} kept)", resume=True)


def _ray_lost(plan: Plan, experiment_id: str, parent_id: str, cause: str) -> None:
    """The local Ray died under the trials (a killed raylet): close the runs as KILLED, print one
    line with the cause and the command that continues, exit 1. Runs on the watching thread,
    because Ray's core worker ends the process soon after without returning to Python."""
    from sweep.engine import session

    cfg, args = plan.cfg, plan.args
    try:
        note = f"Stopped: {cause}. Continue with `{_command(cfg, args)}`."
        tracking.interrupt_parent(tracking.client(plan.uri), experiment_id, parent_id, note)
        kept = "its runs are closed as KILLED, ended trials and per-epoch checkpoints kept"
    except Exception as e:  # noqa: BLE001 - the line and the exit must happen regardless
        kept = f"its runs could not be closed ({type(e).__name__}); ended trials and checkpoints kept"
    if ctrlc.pressed():  # e.g. SIGHUP to the whole process group: Ray's processes died of it too
        cause = f"{cause} after {ctrlc.cause()}"
    print(f"\nsweep {cfg.name!r} stopped: {cause}; {kept}; continue with: {_command(cfg, args)}", flush=True)
    session.kill_local()
    os._exit(128 + ctrlc.signal_number() if ctrlc.pressed() else 1)


def _kept(rows: list[dict[str, Any]], points: list[str], total: int) -> str:
    """What an interrupted Tune run kept, by point: ended, mid-training, not started.

    ``points``: the grid's point names (Tune creates a grid's trials only as slots free up, so
    the result grid may lack the last ones); ``total``: the trials the sweep runs.
    """
    done = [r for r in rows if r["status"] in (Status.FINISHED, Status.DIVERGED, Status.FAILED)]
    begun = sorted(report.point_of(r) for r in rows if r not in done and keys.EPOCH in r["metrics"])
    unseen = set(points) - {report.point_of(r) for r in rows}
    fresh = sorted(unseen | {report.point_of(r) for r in rows if r not in done and keys.EPOCH not in r["metrics"]})
    parts = [f"during the trials: kept {len(done)} ended trial(s)"]
    if begun:
        parts.append(f"{len(begun)} stopped mid-training, to continue from their last epoch ({', '.join(begun)})")
    waiting = max(len(fresh), total - len(done) - len(begun))
    if waiting:
        parts.append(f"{waiting} not started" + (f" ({', '.join(fresh)})" if fresh else ""))
    return "; ".join(parts)


def _run_trials(plan: Plan, phases: Phases, mc: Any, experiment_id: str, parent_id: str, judge_run: str | None) -> int:
    from sweep.engine import session, tuner

    cfg, uri, storage, args = plan.cfg, plan.uri, plan.storage, plan.args
    base = _absolute_paths(cfg)
    grid = grid_points(cfg.search)
    points = {p.key: p for p in grid}  # keyed by identity: two points that print alike stay two
    ctx = SweepContext(
        sweep=cfg.name,
        tracking_uri=uri,
        experiment_id=experiment_id,
        parent_id=parent_id,
        base=base,
        objective=cfg.objective,
        judge_run=judge_run,
        threads=cfg.trial_threads,
        points=points if cfg.search.method == "grid" else {},
        names=point_names(base, grid) if cfg.search.method == "grid" else {},
        seed=cfg.search.seeds[0],
    )
    study = _study_storage(cfg, storage) if cfg.search.method == "optuna" else ""
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
        restore = args.resume and tuner.can_restore(f"{storage.rstrip('/')}/{cfg.name}")
        stop_watching = session.watch_local(lambda cause: _ray_lost(plan, experiment_id, parent_id, cause))
        try:
            rows = tuner.fit(cfg, ctx, storage, study, restore)
        finally:
            stop_watching()
    seams.kill_point("fitted")
    for row in rows:
        row["status"] = final_status(row["metrics"].get(keys.STATUS), bool(row["error"]))
    if tuner.interrupted() or ctrlc.pressed():  # Tune caught the Ctrl-C, stopped the trials and saved its state
        total = len(points) if cfg.search.method == "grid" else cfg.search.n_trials
        raise _interrupt(plan, mc, experiment_id, parent_id, _kept(rows, list(ctx.names.values()), total))
    tracking.settle_trials(mc, experiment_id, parent_id, {r["trial_id"]: r["status"] for r in rows})
    missing = missing_points(rows, ctx) if cfg.search.method == "grid" else []
    confirmation = confirm.Confirmation([], None, None, retrained=False)
    selected = report.best_row(rows)
    if cfg.confirm.enabled:
        remote = (lambda fn: session.run_task(fn, cfg)) if cfg.resources.gpus > 0 else None
        with phases("confirm"):
            confirmation = confirm.run_stage(
                cfg, uri, experiment_id, parent_id, rows, selected["trial_id"] if selected else None,
                report.objective_of, report.point_of, judge_run, remote, ctx,
                lambda fns: session.run_tasks(fns, cfg),
            )  # fmt: skip
        ctrlc.check()
    outcome = report.Outcome(rows, confirmation, cfg.objective.split, _pooled(mc, uri, cfg, parent_id))
    report.print_summary(outcome)
    failed = sum(r["status"] == Status.FAILED for r in rows)
    best_run = _run_of(mc, experiment_id, parent_id, outcome.best_trial())
    if cfg.analysis:
        with phases("analysis"):
            _analysis(cfg, uri, parent_id, storage, best_run)
        ctrlc.check()
    summary, extra = report.best_metrics(outcome)
    if extra:
        tracking.log_parent_metrics(mc, parent_id, extra)
    tracking.finish_parent(
        mc, parent_id, trials=len(rows), failed=failed, counts=report.counts(rows), best=summary or None,
        best_run=best_run, note=report.note(cfg.name, outcome),
    )  # fmt: skip
    seams.kill_point("analysis")
    print(f"\nsweep {cfg.name!r} done in {phases.summary()}: {len(rows)} trials, {failed} failed")
    if missing:
        print(f"sweep {cfg.name!r}: {len(missing)} of {len(points)} points have no trial in Tune's results "
              f"({', '.join(missing)}); Tune did not run them (its state was not what the sweep saved?); their "
              "results are missing, so the sweep is not done", flush=True)  # fmt: skip
    _print_next_steps(cfg, uri, parent_id, storage, args, experiment_id)
    return 1 if failed or tuner.stalled() or missing else 0


def missing_points(rows: list[dict[str, Any]], ctx: SweepContext) -> list[str]:
    """The grid's points (by key) with no trial among Tune's result ``rows``, by name: a grid
    sweep never ends as done without every point."""
    seen = {ctx.point_of(r["config"]).key for r in rows if r.get("config")}
    return sorted(ctx.names.get(key, key) for key in ctx.points if key not in seen)


def _pooled(mc: Any, uri: str, cfg: SweepConfig, parent_id: str) -> dict[str, Any]:
    """The training seed's pooled run-to-run variance per column over the sweep's runs (points with
    >= 2 seeds: several search seeds, or the confirmation's retrains), logged on the parent as
    ``pooled/<column>_sd`` and ``_df``; {} when no point has two seeds (or no trial finished)."""
    from analysis.runs import AnalysisError, load
    from analysis.verdicts import pooled_all

    try:
        pools = pooled_all(load(cfg.experiment_name, uri, parent_id))
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


def run(args: argparse.Namespace, cfg: SweepConfig) -> int:
    """Run the sweep of a parsed command line and its loaded config (:func:`sweep.cli.load_config`);
    returns the exit status (0 done, 1 some trials failed, 2 bad input, 128 + n for signal n)."""
    phases = Phases()
    ctrlc.install()
    before, since = _store_files(cfg), time.time()  # what of a local MLflow store exists before this run writes
    try:
        plan = prepare(args, cfg, phases)
    except (ConfigError, preflight.PreflightError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        if "sweep.engine.session" in sys.modules:  # a half-started local Ray would outlive the driver
            _quietly(sys.modules["sweep.engine.session"].stop)
        started = "ray start" in phases.seconds or "checks" in phases.seconds  # the checks had passed
        where = "while Ray started" if started else "during the checks"
        return _interrupted(Interrupted(cfg, args, f"{where}: nothing was written"))
    discard = False
    try:
        return execute(plan, phases)
    except Interrupted as e:
        return _interrupted(e)
    except Exception as e:
        discard = _nothing_kept(plan)
        if discard:  # e.g. the dataset's download failed in the judge stage
            kept = _discard_store(plan, before, since)
            if isinstance(e, ConfigError):  # bad input only the judge stage met (e.g. unreadable data files)
                return fail(f"{e} (found in the judge stage, before any trial; {kept})")
            print(f"sweep {plan.cfg.name!r} failed before any trial ran and {kept}; once the cause below "
                  "is fixed, the same command starts it again", file=sys.stderr, flush=True)  # fmt: skip
        raise
    finally:
        from sweep.engine import session  # prepare() imported it: Ray is up

        _quietly(session.stop)
        if plan.lock is not None:
            plan.lock.release(discard=discard)  # nothing kept: the name is free again


def _store_files(cfg: SweepConfig) -> set[Path]:
    """The files and folders of a local sqlite MLflow store (its database, the lock beside it, the
    artifact root) that exist now."""
    uri = resolve_tracking_uri(cfg)
    if not uri.startswith("sqlite:///"):
        return set()
    db = Path(uri[len("sqlite:///"):])
    paths = [db, Path(f"{db}.lock")]
    root = resolve_artifact_root(cfg)
    if root.startswith("file://"):
        paths.append(Path(root[len("file://"):]))
    return {p for p in paths if p.exists()}


def _discard_store(plan: Plan, before: set[Path], since: float) -> str:
    """After a failure before any trial that kept no sweep: remove the local MLflow store this run
    created when no run was written to it, so the folder is as it was; returns what was kept, in
    words ("kept nothing", or the judge it trained and where). ``since``: when this run started."""
    try:
        mc = tracking.client(plan.uri)
        experiments = [e.experiment_id for e in mc.search_experiments()]
        new = mc.search_runs(experiments, f"attributes.start_time >= {int(since * 1000)}") if experiments else []
    except Exception:  # noqa: BLE001 - the store may be what failed
        return f"kept nothing of the sweep (the MLflow store {plan.uri} is left as it is)"
    judges = [r for r in new if r.data.tags.get(Tag.JUDGE_KEY) and r.info.status == "FINISHED"]
    if judges:
        return (f"kept only the judge it trained (MLflow experiment '{JUDGES_EXPERIMENT}', run "
                f"{judges[0].info.run_id}), which the next start reuses")
    if new:
        return f"kept nothing of the sweep ({len(new)} unfinished run(s) of its judge stage stay in {plan.uri})"
    # Deepest first: the database and its lock file, then the artifact root if still empty.
    created = sorted(_store_files(plan.cfg) - before, key=lambda p: len(p.parts), reverse=True)
    for path in created:
        try:
            path.rmdir() if path.is_dir() else path.unlink()
        except OSError:  # a folder something else wrote into stays
            pass
    left = [str(p) for p in created if p.exists()]
    return f"kept nothing (left: {', '.join(left)})" if left else "kept nothing"


def _nothing_kept(plan: Plan) -> bool:
    """Whether a sweep that crashed left neither an MLflow parent run nor Ray state (its lock's
    mark alone would make the name look taken)."""
    from sweep.engine import tuner

    if plan.parent_id is not None or tuner.can_restore(f"{plan.storage.rstrip('/')}/{plan.cfg.name}"):
        return False
    try:
        return tracking.find_parent(tracking.client(plan.uri), plan.cfg.experiment_name, plan.cfg.name) is None
    except Exception:  # noqa: BLE001 - the store may be what failed: keep the mark then
        return False


def _interrupted(e: Interrupted) -> int:
    print(f"\n{e.line()}", flush=True)
    return 128 + ctrlc.signal_number()  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
