"""The first stage: everything that can refuse a sweep (exit 2) before it writes, then Ray.

:func:`prepare` checks the config's data, stores and resources, takes the sweep's lock, on
``--resume`` cross-checks what the earlier driver left (Tune's state, the Optuna study, the MLflow
runs), collects the warm start's trials and starts (or joins) Ray; it returns a
:class:`CheckedSweep`, or raises ConfigError or PreflightError with nothing written.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from sweep import kill_points, lock, preflight, resources, stopping, store_checks, tracking
from sweep.config import SweepConfig, judge_config
from sweep.paths import resolve_artifact_root, resolve_storage_path, resolve_tracking_uri
from sweep.report import Phases
from trainer.config import ConfigError, flatten


@dataclass
class CheckedSweep:
    """A sweep that passed every check, with Ray up: what the later stages run."""

    args: argparse.Namespace
    cfg: SweepConfig
    uri: str  # MLflow tracking URI
    artifact_root: str | None  # for experiments this sweep creates; None: the server decides
    storage: str  # Ray's storage path
    parent_id: str | None  # the existing parent run (a resumed sweep), else None
    lock: lock.SweepLock | None = field(default=None, repr=False)  # held for the driver's life
    warm: tuple[list, int] = ([], 0)  # sweep.warmstart.collect: trials entering the study, left out

    @property
    def sweep_dir(self) -> str:
        """Ray's results folder of this sweep (local or s3://)."""
        return f"{self.storage.rstrip('/')}/{self.cfg.name}"


def check_data_files(cfg: SweepConfig) -> None:
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


def prepare(args: argparse.Namespace, cfg: SweepConfig, phases: Phases) -> CheckedSweep:
    """Everything that can refuse the sweep (exit 2): config, names, preflight, Ray, resources.

    Raises ConfigError or PreflightError before anything is written; Ray is up on return.
    """
    with phases("checks"):
        uri = resolve_tracking_uri(cfg)
        local_store = not uri.startswith(("http://", "https://"))
        artifact_root = resolve_artifact_root(cfg) if local_store else None
        storage = resolve_storage_path(cfg)
        preflight.check_dataset(cfg.trainer.data)
        check_data_files(cfg)  # md5 of CIFAR's files: under a second, before anything is written
        resources.check_packing(cfg)  # trials per GPU × estimated memory, before Ray starts
        preflight.check_tracking(uri)
        preflight.check_db_driver(uri)
        store_checks.check_tracking_store(uri, artifact_root)
        store_checks.check_storage(storage)
        store_checks.bound_http_retries()
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
) -> CheckedSweep:
    """The rest of :func:`prepare`, under the sweep's lock."""
    from sweep.engine import session

    kill_points.kill_point("locked")
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
            stopping.install_stop_signals()  # ray.init replaced the SIGTERM handler
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
        resources.check_resources(cfg, session.nodes())
    except preflight.PreflightError:
        session.stop()
        raise
    return CheckedSweep(args, cfg, uri, artifact_root, storage, parent_id, held, warm)
