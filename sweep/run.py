"""``python -m sweep.run``: validate, preflight, judge, Ray Tune, MLflow, analysis.

    python -m sweep.run                                  # the quickstart preset, CPU, minutes
    python -m sweep.run --config table2 --address auto   # the paper's grid on a Ray cluster
    python -m sweep.run --config my.yaml --set trainer.epochs=10 --name try2
    python -m sweep.run --config table2 --resume         # continue a killed sweep

Bad input (config, flags, missing data, trials packed beyond a GPU's memory, unreachable MLflow,
resources no node has, a name that exists without --resume) prints one message and exits with
status 2 before anything is written.
Ctrl-C in any stage stops the trials, closes the MLflow runs as KILLED (resumable), prints one line
with what was kept and the command that continues, and exits with status 130.
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
from types import ModuleType
from typing import Any, Sequence

from sweep import ctrlc, lock, preflight, seams, stores, tracking
from sweep.config import SweepConfig
from sweep.judge_stage import ensure_judge
from sweep.loading import load_sweep_config, preset_names
from sweep.paths import resolve_artifact_root, resolve_storage_path, resolve_tracking_uri
from sweep.objective import WORST
from sweep.points import apply_point, grid_points, point_name
from sweep.record import Status
from sweep.trial import SweepContext
from trainer import keys
from trainer.config import ConfigError

EXIT_USAGE = 2  # bad input: nothing was started or written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m sweep.run",
        description="Run a λ×μ sweep of the regularized trainer on Ray Tune, tracked in MLflow.",
    )
    p.add_argument("--config", default="quickstart", help=f"a YAML file or a preset: {', '.join(preset_names())}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--name", help="the sweep's name (default: the config's name)")
    p.add_argument("--resume", action="store_true", help="continue the sweep of this name after a crash or kill")
    p.add_argument("--address", help="Ray cluster to use ('auto' or HOST:PORT; default: RAY_ADDRESS, else a local one)")
    return p.parse_args(argv)


def _fail(message: str) -> int:
    print(f"sweep.run: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _absolute_paths(cfg: SweepConfig) -> dict[str, Any]:
    # Tune runs trials in their own folders, so relative data paths would break there.
    base = cfg.trainer.model_dump()
    if "://" not in base["data"]["data_dir"]:
        base["data"]["data_dir"] = str(Path(base["data"]["data_dir"]).resolve())
    return base


def _study_storage(cfg: SweepConfig, storage: str) -> str:
    if cfg.search.storage:
        return cfg.search.storage
    folder = Path(storage) if "://" not in storage else Path.cwd() / "sweep_results"
    folder.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    return f"sqlite:///{folder / (cfg.name + '-optuna.db')}"


def _status_of(row: dict[str, Any]) -> Status:
    """The final status of a Tune trial from its last result."""
    if row["error"]:
        return Status.FAILED
    status = row["metrics"].get(keys.STATUS)
    return Status(status) if status in (Status.FINISHED, Status.DIVERGED) else Status.STOPPED


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)


def _objective(row: dict[str, Any]) -> float | None:
    """The trial's final eval/objective; None when it never evaluated (or never started).

    Tune's last result carries the objective of the trial's latest evaluation, or the worst
    value before the first one; a diverged trial's worst value is its real objective.
    """
    m = row["metrics"]
    if row["status"] == Status.DIVERGED:
        return m.get(keys.OBJECTIVE)
    value = m.get(keys.OBJECTIVE)
    return value if value is not None and (value != WORST or keys.GAN_TEST in m) else None


def _point(row: dict[str, Any]) -> str:
    return str(row["metrics"].get("point", row["trial_id"]))


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the highest final eval/objective (the selection metric), or None."""
    done = [r for r in rows if r["status"] == Status.FINISHED and _objective(r) is not None]
    return max(done, key=lambda r: _objective(r) or 0.0) if done else None


def _print_summary(rows: list[dict[str, Any]]) -> None:
    print("\nTrials, best first (val/test = validation/test accuracy, gan = GAN-test, objective = eval/objective):")
    print(f"  {'point':32s} {'status':9s} {'epoch':>5s} {'val':>6s} {'test':>6s} {'gan':>6s} {'objective':>9s}")
    ranked = sorted(rows, key=lambda r: (_objective(r) is None, -(_objective(r) or 0.0), _point(r)))
    for row in ranked:
        m = row["metrics"]
        print(
            f"  {_point(row):32s} {row['status']:9s} {_fmt(m.get(keys.EPOCH)):>5s} "
            f"{_fmt(m.get(keys.VAL_ACC)):>6s} {_fmt(m.get(keys.TEST_ACC)):>6s} {_fmt(m.get(keys.GAN_TEST)):>6s} "
            f"{_fmt(_objective(row)):>9s}"
        )
        if row["error"]:
            print(f"      error: {row['error']}")
    best = best_row(rows)
    if best is not None:
        print(f"Best point: {_point(best)} (objective {_fmt(_objective(best))})")
    for status in (Status.DIVERGED, Status.STOPPED, Status.FAILED):
        named = sorted(_point(r) for r in rows if r["status"] == status)
        if named:
            print(f"{status.capitalize()}: {', '.join(named)}")


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    ends = (Status.FINISHED, Status.DIVERGED, Status.STOPPED, Status.FAILED)
    return {str(s): sum(r["status"] == s for r in rows) for s in ends}


def _note(name: str, rows: list[dict[str, Any]]) -> str:
    """The parent run's description in the MLflow UI (Markdown)."""
    counts = ", ".join(f"{n} {s}" for s, n in _counts(rows).items())
    text = f"Sweep **{name}**: {len(rows)} trials ({counts})."
    best = best_row(rows)
    if best is not None:
        m = best["metrics"]
        text += (
            f" Best point by the final `{keys.OBJECTIVE}`: **{_point(best)}**, objective {_fmt(_objective(best))},"
            f" validation accuracy {_fmt(m.get(keys.VAL_ACC))}, test accuracy {_fmt(m.get(keys.TEST_ACC))},"
            f" GAN-test {_fmt(m.get(keys.GAN_TEST))}."
        )
    return text + " Config: `sweep.yaml`; Table 2 and Pareto front: `analysis/` in this run's artifacts."


def _analysis(cfg: SweepConfig, uri: str, parent_id: str, storage: str) -> None:
    """Table 2 and Pareto front into the parent run, when the analysis package offers them."""
    try:
        from analysis import default_out_dir, report_sweep
    except ImportError as e:
        print(f"analysis: skipped (analysis.report_sweep is not available: {e})")
        return
    out = default_out_dir(cfg.experiment_name, cfg.name).resolve()  # the same folder as the analysis CLI's
    print(f"analysis: Table 2, Pareto front and figures of sweep {cfg.name!r} ...", flush=True)
    try:
        report_sweep(cfg.experiment_name, parent_id, out, uri)
    except Exception as e:  # the sweep's results are in MLflow already; a failed report must not hide that
        print(f"analysis: failed ({type(e).__name__}: {e}); run it by hand with the command below")
        return
    print(f"analysis: Table 2 and Pareto front written to {out} and logged to the parent run")


def _command(cfg: SweepConfig, args: argparse.Namespace, resume: bool = True) -> str:
    """The shell command that runs this sweep again (``--resume``: continues it), quoted."""
    return (
        f"cd {shlex.quote(str(Path.cwd()))} && python -m sweep.run --config {shlex.quote(args.config)}"
        f" --name {shlex.quote(cfg.name)}"
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
        f"  MLflow:      {uri}  (experiment '{exp}', parent run '{cfg.name}' = {parent_id})\n"
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
    ray: ModuleType = field(repr=False)  # sweep.tune, imported once the input is known good
    lock: lock.SweepLock | None = field(default=None, repr=False)  # held for the driver's life
    warm: tuple[list, int] = ([], 0)  # sweep.warmstart.collect: trials entering the study, left out


class Interrupted(Exception):
    """Ctrl-C: ``message`` says what was kept; ``resume`` whether ``--resume`` continues it."""

    def __init__(self, cfg: SweepConfig | None, args: argparse.Namespace, message: str, resume: bool = False):
        super().__init__(message)
        self.cfg, self.cli, self.message, self.resume = cfg, args, message, resume  # (Exception owns .args)

    def line(self) -> str:
        """The one line the driver prints: what was kept and the exact command that continues."""
        if self.cfg is None:
            return f"interrupted {self.message}; run it again with the same command"
        verb = "continue with" if self.resume else "start it again with"
        return f"sweep {self.cfg.name!r} interrupted {self.message}; {verb}: {_command(self.cfg, self.cli, self.resume)}"


def _quietly(fn: Any) -> None:
    """Run a clean-up step with Ctrl-C ignored, so a second Ctrl-C cannot cut it short."""
    previous = ctrlc.ignore()
    try:
        fn()
    finally:
        signal.signal(signal.SIGINT, previous)


def prepare(args: argparse.Namespace, phases: Phases) -> Plan:
    """Everything that can refuse the sweep (exit 2): config, names, preflight, Ray, resources.

    Raises ConfigError or PreflightError before anything is written; Ray is up on return.
    """
    with phases("checks"):
        cfg = load_sweep_config(args.config, args.set, args.name)
        uri = resolve_tracking_uri(cfg)
        local_store = not uri.startswith(("http://", "https://"))
        artifact_root = resolve_artifact_root(cfg) if local_store else None
        storage = resolve_storage_path(cfg)
        preflight.check_dataset(cfg.trainer.data)
        preflight.check_packing(cfg)  # trials per GPU × estimated memory, before Ray starts
        preflight.check_tracking(uri)
        stores.check_tracking_store(uri, artifact_root)
        stores.check_storage(storage)
        stores.bound_http_retries()
        preflight.check_ray_address(args.address or os.environ.get("RAY_ADDRESS"))
        from sweep import tune as ray_tune  # Ray is imported only once the input is known good

        sweep_dir = f"{storage.rstrip('/')}/{cfg.name}"

        def check_name() -> str | None:
            parent = None
            if not preflight.sqlite_missing(uri):
                parent = tracking.find_parent(tracking.client(uri), cfg.experiment_name, cfg.name)
            # under the lock, the lock file counts only if a driver made it before this one
            started = ray_tune.can_restore(sweep_dir) or (held.existed if held else lock.started(sweep_dir))
            preflight.check_name(cfg.name, args.resume, started, parent, sweep_dir)
            return parent

        held = None
        try:
            lock.check_free(sweep_dir, cfg.name)  # a running driver is named before anything else
            check_name()  # read-only first, so a refused name writes nothing
            held = lock.acquire(sweep_dir, cfg.name)
        except lock.LockHeld as e:
            raise preflight.PreflightError(str(e)) from None
    try:
        return _prepare_locked(args, phases, cfg, uri, artifact_root, storage, ray_tune, check_name, held)
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
    ray_tune: ModuleType,
    check_name: Callable[[], str | None],
    held: lock.SweepLock | None,
) -> Plan:
    """The rest of :func:`prepare`, under the sweep's lock."""
    seams.kill_point("locked")
    with phases("checks"):
        parent_id = check_name()  # again under the lock: a driver that held it may have finished
        if parent_id is not None and tracking.client(uri).get_run(parent_id).info.status == "RUNNING":
            print(f"sweep {cfg.name!r}: its parent run {parent_id} was left RUNNING by a driver that is gone; taking it over")
        from sweep import warmstart  # imports Optuna, as sweep.tune does

        warm = warmstart.collect(cfg, uri)  # refuses (exit 2) sources whose training config differs
    with phases("ray start"):
        try:
            ray_tune.start(args.address)
        except ConnectionError as e:
            raise preflight.PreflightError(
                f"--address: cannot join the Ray cluster ({e}); is it up, and does this shell have its "
                "auth token (RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token)?"
            ) from None
    try:
        preflight.check_resources(cfg, ray_tune.nodes())
    except preflight.PreflightError:
        ray_tune.stop()
        raise
    return Plan(args, cfg, uri, artifact_root, storage, parent_id, ray_tune, held, warm)


def execute(plan: Plan, phases: Phases) -> int:
    """Judge, parent run, trials, analysis; returns 0, or 1 when some trials failed."""
    cfg, uri, storage, args = plan.cfg, plan.uri, plan.storage, plan.args
    mc = tracking.client(uri)
    # A GPU judge trains on a worker (the head is often CPU-only); the quickstart's on the driver.
    remote = (lambda fn: plan.ray.run_task(fn, cfg)) if cfg.resources.gpus > 0 else None
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
        kept = "in the analysis: every trial had ended and is kept" if "trials" in phases.seconds else ""
        raise _interrupt(plan, mc, experiment_id, parent_id, kept) from None


def _interrupt(plan: Plan, mc: Any, experiment_id: str, parent_id: str, kept: str) -> Interrupted:
    """Close the sweep's MLflow runs as KILLED; --resume reopens them (a parent run without Ray
    state resumes as a fresh Tuner under the same parent)."""
    cfg, args = plan.cfg, plan.args
    if not kept and not plan.ray.can_restore(f"{plan.storage.rstrip('/')}/{cfg.name}"):
        kept = "before Ray saved any trial: only the MLflow parent run was kept"
    note = f"Interrupted (Ctrl-C){': ' + kept if kept else ''}. Continue with `{_command(cfg, args)}`."
    _quietly(lambda: tracking.interrupt_parent(mc, experiment_id, parent_id, note))
    return Interrupted(cfg, args, kept or f"(MLflow parent run {parent_id} kept)", resume=True)


def _kept(rows: list[dict[str, Any]], points: list[str], total: int) -> str:
    """What an interrupted Tune run kept, by point: ended, mid-training, not started.

    ``points``: the grid's point names (Tune creates a grid's trials only as slots free up, so
    the result grid may lack the last ones); ``total``: the trials the sweep runs.
    """
    done = [r for r in rows if r["status"] in (Status.FINISHED, Status.DIVERGED, Status.FAILED)]
    begun = sorted(_point(r) for r in rows if r not in done and keys.EPOCH in r["metrics"])
    unseen = set(points) - {_point(r) for r in rows}
    fresh = sorted(unseen | {_point(r) for r in rows if r not in done and keys.EPOCH not in r["metrics"]})
    parts = [f"during the trials: kept {len(done)} ended trial(s)"]
    if begun:
        parts.append(f"{len(begun)} stopped mid-training, to continue from their last epoch ({', '.join(begun)})")
    waiting = max(len(fresh), total - len(done) - len(begun))
    if waiting:
        parts.append(f"{waiting} not started" + (f" ({', '.join(fresh)})" if fresh else ""))
    return "; ".join(parts)


def _run_trials(plan: Plan, phases: Phases, mc: Any, experiment_id: str, parent_id: str, judge_run: str | None) -> int:
    cfg, uri, storage, args = plan.cfg, plan.uri, plan.storage, plan.args
    base = _absolute_paths(cfg)
    points = {point_name(apply_point(base, p), p): p for p in grid_points(cfg.search)}
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
        seed=cfg.search.seeds[0],
    )
    study = _study_storage(cfg, storage) if cfg.search.method == "optuna" else ""
    if args.resume and cfg.search.method == "optuna":
        stale = plan.ray.fail_stale_optuna_trials(cfg.name, study)
        if stale:
            print(f"optuna: marked {stale} trial(s) left running by the killed driver as failed")
    print(f"sweep {cfg.name!r}: {'resuming' if args.resume else 'starting'}; MLflow parent run {parent_id}", flush=True)
    if cfg.search.warm_start:
        from sweep import warmstart

        warmstart.enter(cfg, mc, parent_id, cfg.name, study, *plan.warm)
    with phases("trials"):
        # A sweep killed before Tune saved its state resumes as a fresh Tuner under the same parent.
        restore = args.resume and plan.ray.can_restore(f"{storage.rstrip('/')}/{cfg.name}")
        rows = plan.ray.fit(cfg, ctx, storage, study, restore)
    seams.kill_point("fitted")
    for row in rows:
        row["status"] = _status_of(row)
    if plan.ray.interrupted() or ctrlc.pressed():  # Tune caught the Ctrl-C, stopped the trials and saved its state
        total = len(points) if cfg.search.method == "grid" else cfg.search.n_trials
        raise _interrupt(plan, mc, experiment_id, parent_id, _kept(rows, list(ctx.points), total))
    tracking.settle_trials(mc, experiment_id, parent_id, {r["trial_id"]: r["status"] for r in rows})
    _print_summary(rows)
    failed = sum(r["status"] == Status.FAILED for r in rows)
    if cfg.analysis:
        with phases("analysis"):
            _analysis(cfg, uri, parent_id, storage)
        ctrlc.check()
    best = best_row(rows)
    tracking.finish_parent(
        mc, parent_id, trials=len(rows), failed=failed, counts=_counts(rows),
        best={"point": _point(best), **best["metrics"]} if best else None, note=_note(cfg.name, rows),
    )  # fmt: skip
    seams.kill_point("analysis")
    print(f"\nsweep {cfg.name!r} done in {phases.summary()}: {len(rows)} trials, {failed} failed")
    _print_next_steps(cfg, uri, parent_id, storage, args, experiment_id)
    return 1 if failed or plan.ray.stalled() else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 done, 1 some trials failed, 2 bad input)."""
    args = parse_args(argv)
    phases = Phases()
    ctrlc.install()
    try:
        plan = prepare(args, phases)
    except (ConfigError, preflight.PreflightError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        if "sweep.tune" in sys.modules:  # a half-started local Ray would outlive the driver
            _quietly(sys.modules["sweep.tune"].stop)
        started = "ray start" in phases.seconds or "checks" in phases.seconds  # the checks had passed
        where = "while Ray started" if started else "during the checks"
        return _interrupted(Interrupted(_config_or_none(args), args, f"{where}: nothing was written"))
    try:
        return execute(plan, phases)
    except Interrupted as e:
        return _interrupted(e)
    finally:
        _quietly(plan.ray.stop)
        if plan.lock is not None:
            plan.lock.release()


def _config_or_none(args: argparse.Namespace) -> SweepConfig | None:
    try:
        return load_sweep_config(args.config, args.set, args.name)
    except (ConfigError, KeyboardInterrupt):
        return None


def _interrupted(e: Interrupted) -> int:
    print(f"\n{e.line()}", flush=True)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
