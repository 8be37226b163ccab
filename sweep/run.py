"""``python -m sweep.run``: validate, preflight, judge, Ray Tune, MLflow, analysis.

    python -m sweep.run                                  # the quickstart preset, CPU, minutes
    python -m sweep.run --config table2 --address auto   # the paper's grid on a Ray cluster
    python -m sweep.run --config my.yaml --set trainer.epochs=10 --name try2
    python -m sweep.run --config table2 --resume         # continue a killed sweep

Bad input (config, flags, missing data, unreachable MLflow, resources no node has, a name that
exists without --resume) prints one message and exits with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from sweep import preflight, tracking
from sweep.config import SweepConfig
from sweep.judge_stage import ensure_judge
from sweep.loading import load_sweep_config, preset_names
from sweep.paths import resolve_artifact_root, resolve_storage_path, resolve_tracking_uri
from sweep.points import apply_point, grid_points, point_name
from sweep.record import Status
from sweep.trial import SweepContext
from trainer import keys
from trainer.config import ConfigError

EXIT_USAGE = 2  # bad input: nothing was started or written


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


def _print_summary(rows: list[dict[str, Any]]) -> None:
    print("\nTrials (acc = test accuracy, gan = GAN-test, objective = eval/objective):")
    print(f"  {'point':32s} {'status':9s} {'epoch':>5s} {'acc':>6s} {'gan':>6s} {'objective':>9s}")
    for row in sorted(rows, key=lambda r: r["metrics"].get("point", "")):
        m = row["metrics"]
        print(
            f"  {m.get('point', row['trial_id']):32s} {row['status']:9s} {_fmt(m.get(keys.EPOCH)):>5s} "
            f"{_fmt(m.get(keys.TEST_ACC)):>6s} {_fmt(m.get(keys.GAN_TEST)):>6s} {_fmt(m.get(keys.OBJECTIVE)):>9s}"
        )
        if row["error"]:
            print(f"      error: {row['error']}")


def _analysis(cfg: SweepConfig, uri: str, parent_id: str, storage: str) -> None:
    """Table 2 and Pareto front into the parent run, when the analysis package offers them."""
    try:
        from analysis import report_sweep
    except ImportError as e:
        print(f"analysis: skipped (analysis.report_sweep is not available: {e})")
        return
    out = Path(storage) / cfg.name / "analysis" if "://" not in storage else Path(tempfile.mkdtemp(prefix="sweep-analysis-"))
    try:
        report_sweep(cfg.experiment_name, parent_id, out, uri)
    except Exception as e:  # the sweep's results are in MLflow already; a failed report must not hide that
        print(f"analysis: failed ({type(e).__name__}: {e}); run it by hand with the command below")
        return
    print(f"analysis: Table 2 and Pareto front written to {out} and logged to the parent run")


def _print_next_steps(cfg: SweepConfig, uri: str, parent_id: str, storage: str, args: argparse.Namespace) -> None:
    exp = cfg.experiment_name
    ui = f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"
    uri_flag = f" --tracking-uri {uri}"
    print(
        f"\nResults:\n"
        f"  MLflow:      {uri}  (experiment '{exp}', parent run '{cfg.name}' = {parent_id})\n"
        f"  Ray results: {storage.rstrip('/')}/{cfg.name}\n"
        f"Open the MLflow UI:\n"
        f"  {ui}     # then browse http://127.0.0.1:5000\n"
        f"Analysis (Table 2 heatmap, Pareto front):\n"
        f"  python -m analysis table2 --experiment {exp}{uri_flag}\n"
        f"  python -m analysis pareto --experiment {exp}{uri_flag}\n"
        f"Continue after an interruption:\n"
        f"  cd {Path.cwd()} && python -m sweep.run --config {shlex.quote(args.config)} --name {cfg.name} --resume"
        + (f" --address {shlex.quote(args.address)}" if args.address else "")
        + "".join(f" --set {shlex.quote(s)}" for s in args.set)
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
    warm: tuple[list, int] = ([], 0)  # sweep.warmstart.collect: trials entering the study, left out


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
        preflight.check_tracking(uri)
        preflight.check_ray_address(args.address or os.environ.get("RAY_ADDRESS"))
        from sweep import tune as ray_tune  # Ray is imported only once the input is known good

        sweep_dir = f"{storage.rstrip('/')}/{cfg.name}"
        parent_id = None
        if not preflight.sqlite_missing(uri):
            parent_id = tracking.find_parent(tracking.client(uri), cfg.experiment_name, cfg.name)
        preflight.check_name(cfg.name, args.resume, ray_tune.can_restore(sweep_dir), parent_id, sweep_dir)
        from sweep import warmstart  # imports Optuna, as sweep.tune above does

        warm = warmstart.collect(cfg, uri)
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
    return Plan(args, cfg, uri, artifact_root, storage, parent_id, ray_tune, warm)


def execute(plan: Plan, phases: Phases) -> int:
    """Judge, parent run, trials, analysis; returns 0, or 1 when some trials failed."""
    cfg, uri, storage, args = plan.cfg, plan.uri, plan.storage, plan.args
    mc = tracking.client(uri)
    # A GPU judge trains on a worker (the head is often CPU-only); the quickstart's on the driver.
    remote = (lambda fn: plan.ray.run_task(fn, cfg)) if cfg.resources.gpus > 0 else None
    with phases("judge"):
        judge_run = ensure_judge(cfg, uri, plan.artifact_root, remote)
    experiment_id, parent_id = tracking.open_parent(
        mc, cfg.experiment_name, plan.artifact_root, cfg.name, cfg.model_dump(mode="json"), plan.parent_id
    )
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
        rows = plan.ray.fit(cfg, ctx, storage, study, args.resume)
    for row in rows:
        row["status"] = _status_of(row)
    tracking.settle_trials(mc, experiment_id, parent_id, {r["trial_id"]: r["status"] for r in rows})
    _print_summary(rows)
    failed = sum(r["status"] == Status.FAILED for r in rows)
    if cfg.analysis:
        with phases("analysis"):
            _analysis(cfg, uri, parent_id, storage)
    tracking.finish_parent(mc, parent_id, trials=len(rows), failed=failed)
    print(f"\nsweep {cfg.name!r} done in {phases.summary()}: {len(rows)} trials, {failed} failed")
    _print_next_steps(cfg, uri, parent_id, storage, args)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 done, 1 some trials failed, 2 bad input)."""
    args = parse_args(argv)
    phases = Phases()
    try:
        plan = prepare(args, phases)
    except (ConfigError, preflight.PreflightError) as e:
        return _fail(str(e))
    try:
        return execute(plan, phases)
    finally:
        plan.ray.stop()


if __name__ == "__main__":
    sys.exit(main())
