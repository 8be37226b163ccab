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
from pathlib import Path
from typing import Any, Sequence

import yaml

from sweep import preflight, tracking
from sweep.config import (
    SweepConfig,
    apply_point,
    grid_points,
    load_sweep_config,
    point_name,
    preset_names,
    resolve_artifact_root,
    resolve_storage_path,
    resolve_tracking_uri,
)
from sweep.judge_stage import ensure_judge
from sweep.trial import SweepContext
from trainer import keys
from trainer.config import ConfigError, flatten

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


def _status_of(row: dict[str, Any]) -> str:
    """The final trial.status of a Tune trial from its last result."""
    if row["error"]:
        return "failed"
    status = row["metrics"].get(keys.STATUS)
    return status if status in ("finished", "diverged") else "stopped"


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 done, 1 some trials failed, 2 bad input)."""
    args = parse_args(argv)
    started = time.time()
    try:
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
    except (ConfigError, preflight.PreflightError) as e:
        return _fail(str(e))

    phases: dict[str, float] = {"checks": time.time() - started}  # wall seconds per phase
    mark = time.time()
    try:
        ray_tune.start(args.address)
    except ConnectionError as e:
        return _fail(
            f"--address: cannot join the Ray cluster ({e}); is it up, and does this shell have its "
            "auth token (RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token)?"
        )
    phases["ray start"] = time.time() - mark
    try:
        try:
            preflight.check_resources(cfg, ray_tune.nodes())
        except preflight.PreflightError as e:
            return _fail(str(e))
        mc = tracking.client(uri)
        # A GPU judge trains on a worker (the head is often CPU-only); the quickstart's on the driver.
        remote = ray_tune.run_once(cfg, storage, f"{cfg.name}.judge") if cfg.resources.gpus > 0 else None
        mark = time.time()
        judge_run = ensure_judge(cfg, uri, artifact_root, remote)
        phases["judge"] = time.time() - mark
        experiment_id = tracking.ensure_experiment(mc, cfg.experiment_name, artifact_root)
        if parent_id is None:
            with tempfile.TemporaryDirectory() as tmp:
                config_file = Path(tmp) / "sweep.yaml"
                config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
                parent_id = tracking.start_parent(mc, experiment_id, cfg.name, flatten(cfg.model_dump(mode="json")), config_file)
        else:
            tracking.reopen(mc, parent_id)
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
            stale = ray_tune.fail_stale_optuna_trials(cfg.name, study)
            if stale:
                print(f"optuna: marked {stale} trial(s) left running by the killed driver as failed")
        print(f"sweep {cfg.name!r}: {'resuming' if args.resume else 'starting'}; MLflow parent run {parent_id}", flush=True)
        mark = time.time()
        rows = ray_tune.fit(cfg, ctx, storage, study, args.resume)
        phases["trials"] = time.time() - mark
        for row in rows:
            row["status"] = _status_of(row)
        tracking.settle_trials(mc, experiment_id, parent_id, {r["trial_id"]: r["status"] for r in rows})
        _print_summary(rows)
        failed = sum(r["status"] == "failed" for r in rows)
        mc.set_tag(parent_id, "sweep.trials", str(len(rows)))
        mc.set_tag(parent_id, "sweep.failed_trials", str(failed))
        if cfg.analysis:
            mark = time.time()
            _analysis(cfg, uri, parent_id, storage)
            phases["analysis"] = time.time() - mark
        tracking.finish(mc, parent_id)
        split = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
        print(f"\nsweep {cfg.name!r} done in {time.time() - started:.0f} s ({split}): {len(rows)} trials, {failed} failed")
        _print_next_steps(cfg, uri, parent_id, storage, args)
        return 1 if failed else 0
    finally:
        ray_tune.stop()


if __name__ == "__main__":
    sys.exit(main())
