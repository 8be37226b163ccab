"""Every Ray call of the project: the Ray session, the Tuner, the trainable, restore, one-off tasks.

Ray's reporting API has changed names several times; Ray 2.60 runs Train V2, where
``ray.train.report`` fails inside Tune. So inside trials only ``ray.tune.report``,
``ray.tune.get_checkpoint``, ``ray.tune.get_context`` and ``ray.tune.Checkpoint`` are used, and
the next API change is an edit to this one file.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

# Progress is printed by this module's Tune callback (TrialProgress), so Tune's own output is off
# (verbose=0, and the classic output, which honours it); the checkpoint-sync warning fires on
# every epoch of tiny trials and says nothing actionable.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.train._internal.storage import _exists_at_fs_path  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from sweep import search, seams  # noqa: E402
from sweep.budget import EpochBudget  # noqa: E402
from sweep.config import SweepConfig  # noqa: E402
from sweep.objective import objective_value  # noqa: E402
from sweep.recovery import LOST_NOTE  # noqa: E402
from sweep.trial import POINT, POINT_KEY, SweepContext, run_trial  # noqa: E402
from trainer import keys  # noqa: E402

# Ray picks a reachable node IP on Linux and binds its gRPC servers (GCS, raylet, workers, the
# driver) and the agents' metrics port to every interface; on macOS and Windows it uses loopback.
# This switch (read by Ray at import and inherited by the processes it starts) selects the
# loopback behaviour, so a local sweep listens on 127.0.0.1 only.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved_env: list[str | None] = []


def _loopback(on: bool) -> None:
    """Make Ray in this process and its children use 127.0.0.1 (``on``), or undo it."""
    from ray._private import ray_constants  # the constant Ray read at import

    if on:
        _saved_env.append(os.environ.get(LOOPBACK_ENV))
        os.environ[LOOPBACK_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif _saved_env:
        saved = _saved_env.pop()
        if saved is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved
        ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(LOOPBACK_ENV, not ray_constants.IS_WINDOWS_OR_OSX)


class _TuneInterrupt(logging.Filter):
    """Notes Tune's Ctrl-C and drops its messages that contradict the driver's own.

    On SIGINT Tune (``ray.tune.tune``) logs "Stop signal received", stops the trials, saves the
    experiment state and logs "Resume experiment with: Tuner.restore(...)" and "Trials did not
    complete: [...]"; the sweep's own line names ``--resume`` and the points instead. A filter on
    that one logger, so every other Tune warning still shows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Stop signal received"):
            self.interrupted = True
            return False
        return not (
            self.interrupted and message.startswith(("Experiment has been interrupted", "Trials did not complete"))
        )


class _DropMessage(logging.Filter):
    """Drops one logger's records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


# Ray 2.60 warns on every local start that token authentication is on (its new default, which
# the sweep wants); the warning for it being *off* still shows.
logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
    _DropMessage("Token authentication is enabled")
)
class _TempFileRace(logging.Filter):
    """Drops Tune's error for one benign race: its experiment-state sync copying a temporary file
    (``.<uuid>-tmp-basic-variant-state-….json``) that Tune's own next save renamed away meanwhile.

    The state is written to a temporary name and renamed; an upload still listing the folder then
    fails with FileNotFoundError on the vanished name, and the next sync uploads the renamed file
    (the final save waits for its sync). Every other sync failure (a full disk, S3 down) still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            str(record.msg).startswith("Saving experiment state to storage")
            and isinstance(error, FileNotFoundError)
            and "-tmp-" in str(error)
        )


logging.getLogger("ray.tune.execution.experiment_state").addFilter(_TempFileRace())
INTERRUPT = _TuneInterrupt()
logging.getLogger("ray.tune.tune").addFilter(INTERRUPT)
# The result grid reads each trial's result files; never-started trials (a Ctrl-C'd sweep) have
# none, and it warns with a FileNotFoundError per trial. Their absence is expected.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


class StartTimeout(Exception):
    """Ray's local node did not register within Ray's fixed 30 s, twice (an overloaded machine)."""


def start(address: str | None) -> None:
    """Connect to the cluster at ``address`` (or RAY_ADDRESS), else start a private local one
    that listens on loopback only.

    Ray waits a fixed 30 s for a new local node to register and then raises a bare Exception; on a
    loaded machine that is a passing state, so a local start is tried once more before
    :class:`StartTimeout` says so.
    """
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local" or _on_loopback(address):
        # A cluster on this machine's loopback (``ray start --head --node-ip-address=127.0.0.1``):
        # Ray would otherwise rewrite 127.0.0.1 to the node's network address and wait minutes
        # for a GCS that does not listen there.
        _loopback(True)
    for attempt in (1, 2):
        try:
            # log_to_driver=False keeps trainer chatter off the terminal; Tune still prints each
            # trial's error and the path of its full traceback.
            ray.init(
                address=address,
                log_to_driver=False,
                logging_level=logging.WARNING,
                include_dashboard=False if address == "local" else None,  # a laptop sweep needs no dashboard
            )
            return
        except Exception as e:
            if "timed out during startup" not in str(e):
                raise
            ray.shutdown()
            if attempt == 2:
                raise StartTimeout(str(e)) from None
            print("ray: the local node did not start within Ray's 30 s (a busy machine?); trying once more", flush=True)


def _on_loopback(address: str) -> bool:
    """Whether a HOST:PORT cluster address names this machine's loopback interface."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def stop() -> None:
    ray.shutdown()
    _loopback(False)


def watch_local(on_lost: Callable[[str], None], every: float = 0.5) -> Callable[[], None]:
    """Call ``on_lost(cause)`` from a thread when a process of the local Ray instance this driver
    started dies (a killed raylet or GCS); returns the function that stops watching.

    Ray's core worker ends the driver's process a few seconds after its raylet is lost, without
    returning to Python, so the driver's own clean-up must run from here. Joined clusters
    (``--address``) are not watched: their processes are not this driver's.
    """
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not node.head:
        return lambda: None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            dead = node.dead_processes()
            if dead and not stop.is_set():
                kind, process = dead[0]
                on_lost(f"Ray's {kind} process died (exit status {process.returncode})")
                return

    threading.Thread(target=loop, name="sweep-ray-watch", daemon=True).start()
    return stop.set


def kill_local() -> None:
    """Kill what is left of the local Ray instance at once (after :func:`watch_local` saw it die)."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None and node.head:
        node.kill_all_processes(check_alive=False, allow_graceful=False)


def nodes() -> list[dict[str, float]]:
    """Resources of every live node (CPU, GPU, ...)."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def can_restore(path: str) -> bool:
    """Whether Ray results of a sweep exist at ``path`` (local or s3://)."""
    return tune.Tuner.can_restore(path)


def _trainable(config: dict[str, Any], ctx: SweepContext) -> None:
    checkpoint = tune.get_checkpoint()
    restore = None
    if checkpoint is not None:
        restore = Path(tempfile.mkdtemp(prefix="sweep-restore-"))
        checkpoint.to_directory(str(restore))

    def report(metrics: dict[str, Any], directory: Path | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(directory)) if directory else None)

    try:
        run_trial(ctx, config, tune.get_context().get_trial_id(), restore, report)
    finally:
        if restore is not None:
            shutil.rmtree(restore, ignore_errors=True)


class _LostCheckpoint:
    """Mixed into the trainable's class: restore when the checkpoint Tune's state names is gone.

    Tune's driver deletes a trial's older checkpoint (``num_to_keep``) when it records a new one,
    but saves its experiment state only every few seconds. A driver killed in between leaves a
    state naming a deleted checkpoint, and a trial that outlives its killed driver on a shared
    cluster can do the same; Tune's restore then fails the trial on every retry ("does not exist
    on storage anymore"). Here the newest checkpoint in the trial's own folder is put where the
    state says, and the trial continues from it; when there is none, an empty folder is, and
    :mod:`sweep.recovery` continues the trial from the ``last.pt`` MLflow holds. Either way the
    named path exists again, so Tune's later deletion of it succeeds.
    """

    def restore(self, checkpoint_path: Any) -> Any:
        checkpoint = getattr(checkpoint_path, "checkpoint", None)
        # The very test Tune's restore fails on (Ray's own helper; Ray is pinned to 2.60.x).
        if checkpoint is not None and not _exists_at_fs_path(checkpoint.filesystem, checkpoint.path):
            _replace_lost(checkpoint.filesystem, checkpoint.path)
        return super().restore(checkpoint_path)  # type: ignore[misc]


def _replace_lost(fs: Any, lost: str) -> None:
    """Fill the missing folder ``lost`` with the trial folder's newest checkpoint (moved), or leave
    it empty; a note in it (``recovery.LOST_NOTE``) says which, for the trial's MLflow run."""
    import pyarrow.fs

    newest = newest_checkpoint(fs, os.path.dirname(lost))
    note = f"the Tune checkpoint {os.path.basename(lost)} of this trial was gone; " + (
        f"continued from {os.path.basename(newest)}" if newest else "none was left in its folder"
    )
    fs.create_dir(lost)
    if newest is not None:
        pyarrow.fs.copy_files(newest, lost, source_filesystem=fs, destination_filesystem=fs)
        fs.delete_dir(newest)  # one checkpoint per trial, as num_to_keep says
    with fs.open_output_stream(f"{lost.rstrip('/')}/{LOST_NOTE}") as f:
        f.write(note.encode())


def newest_checkpoint(fs: Any, trial_dir: str) -> str | None:
    """The path of the highest-numbered ``checkpoint_NNNNNN`` folder in ``trial_dir``, or None."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return None
    found = [
        (int(i.base_name.split("_")[1]), i.path)
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory
        and i.base_name.startswith("checkpoint_")
        and i.base_name.split("_")[1].isdigit()
    ]
    return max(found)[1] if found else None


_trainable.__mixins__ = (_LostCheckpoint,)  # type: ignore[attr-defined]  # Tune's hook for the class it wraps a function in


class _KillSeams(tune.Callback):
    """The driver-side points of :mod:`sweep.seams` (a test seam; a no-op unless its variable is set)."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(keys.EPOCH, 0) >= 2:  # so the first epoch's checkpoint is in Tune's state
            seams.kill_point("result")


@ray.remote
def _call(fn: Callable[[], str]) -> str:
    return fn()


def run_task(fn: Callable[[], str], cfg: SweepConfig) -> str:
    """Run ``fn()`` once as a Ray task with a trial's resources, retried as often as a trial."""
    return ray.get(_as_trial(cfg).remote(fn))


def _as_trial(cfg: SweepConfig) -> Any:
    """The task ``_call`` with a trial's resources and retries."""
    return _call.options(
        num_cpus=cfg.resources.cpus,
        num_gpus=cfg.resources.gpus,
        max_retries=cfg.failure.max_failures,  # -1: forever, as Tune's max_failures
        retry_exceptions=True,  # like a trial: an exception retries too, not only a lost worker
    )


def run_tasks(fns: Sequence[Callable[[], str]], cfg: SweepConfig) -> list[str | Exception]:
    """Run each ``fn()`` as a Ray task with a trial's resources, in parallel, at most
    ``max_concurrent_trials`` at a time (0: as many as the cluster's resources allow, as for the
    trials); each retried as often as a trial. Returns the results in order, an exception in place
    of a task that failed for good, so one failure does not lose the others' work."""
    remote = _as_trial(cfg)
    limit = cfg.max_concurrent_trials or len(fns)
    refs: list[Any] = []
    running: list[Any] = []
    for fn in fns:
        if len(running) >= limit:
            _, running = ray.wait(running, num_returns=1)  # a slot frees when one ends
        refs.append(remote.remote(fn))
        running.append(refs[-1])
    out: list[str | Exception] = []
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayError as e:
            out.append(e)
    return out


# Tune's words for a scheduler's decision and for a searcher with nothing more to propose, for the
# replay benchmark (sweep.bench.replay.searches), which makes Tune's calls without importing Ray itself.
STOP, CONTINUE = tune.schedulers.TrialScheduler.STOP, tune.schedulers.TrialScheduler.CONTINUE
FINISHED = Searcher.FINISHED


@dataclass
class SearchSetup:
    """What the search method decides for Tune, built in one place (:func:`search_setup`)."""

    param_space: dict[str, Any]
    search_alg: Any  # None: Tune's own grid
    num_samples: int
    metric: str | None  # None: several objectives, the searcher knows them


def search_setup(cfg: SweepConfig, points: list[str], study_storage: str) -> SearchSetup:
    """The grid over the point keys (never their display names), or Optuna over ``search.space``;
    a grid with ``search.replicate`` is proposed by :func:`search.grid_searcher` instead."""
    if cfg.search.method == "grid":
        ids = list(points)
        if cfg.search.replicate is not None:
            return SearchSetup({}, search.grid_searcher(cfg, ids), search.grid_trials(cfg, len(ids)), keys.OBJECTIVE)
        if cfg.scheduler.kind == "asha":
            # ASHA judges each trial against those that reached a rung before it; a grid in
            # config order (often worst λ first) would never be cut, so run it shuffled.
            random.Random(0).shuffle(ids)
        return SearchSetup({POINT_KEY: tune.grid_search(ids)}, None, 1, keys.OBJECTIVE)
    objectives = cfg.search.objectives
    return SearchSetup(
        param_space={},
        search_alg=search.searcher(cfg, study_storage),
        num_samples=cfg.search.n_trials,
        metric=objectives[0] if len(objectives) == 1 else None,
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class TrialProgress(tune.Callback):
    """One line per trial epoch (at most every ``every`` seconds per trial, always at its end).

    ``  sm λ1e-3 μ1e-4 s0    epoch 2/4  objective 0.677  acc 0.869   [3/10 trials done, ETA ~1 min 10 s]``

    The objective shows ``-`` until the trial's first evaluation (Tune sees the worst value
    before it); the ETA extrapolates this session's epochs per second over the epochs left: those
    of the trials still to run (``total`` of ``epochs`` each), or with a ``budget``
    (:class:`sweep.budget.EpochBudget`) the trial-epochs it has left, whichever is fewer.
    """

    def __init__(self, ctx: SweepContext, epochs: int, total: int, every: float = 10.0,
                 budget: EpochBudget | None = None) -> None:
        self.ctx, self.epochs, self.total, self.every, self.budget = ctx, epochs, total, every, budget
        self.ended: set[str] = set()  # trials that completed or failed for good
        self.names: dict[str, str] = {}
        self.last: dict[str, dict[str, Any]] = {}  # trial id -> its last result
        self.evaluated: set[str] = set()
        self.printed: dict[str, float] = {}
        self.started = 0.0
        self.epochs_seen = 0

    def name(self, trial: Any) -> str:
        if trial.trial_id not in self.names:
            self.names[trial.trial_id] = trial_name(self.ctx, trial.config)
        return self.names[trial.trial_id]

    def _eta(self, trials: list) -> str:
        total = max(self.total, len(trials))
        left = sum(self.epochs - int(self.last.get(t.trial_id, {}).get(keys.EPOCH, 0))
                   for t in trials if t.trial_id not in self.ended)
        left += self.epochs * (total - len(trials))  # not created yet (a searcher's later trials)
        if self.budget is not None:  # ASHA stops most trials early: the budget bounds what is left
            left = min(left, self.budget.untrained())
        if self.epochs_seen < 2 or not left:
            return ""
        return f", ETA ~{_duration((time.time() - self.started) / self.epochs_seen * left)}"

    def _print(self, trials: list, name: str, text: str) -> None:
        total = max(self.total, len(trials))
        # Trials that ended before a resume are TERMINATED without passing through this callback.
        self.ended |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        print(f"  {name:22s} {text:52s} [{len(self.ended)}/{total} trials done{self._eta(trials)}]", flush=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.started:
            self.started = time.time()
            # A resumed sweep starts with the trials that ended before it (TERMINATED; errored ones
            # run again, resume_errored): they are not to run.
            total = max(self.total, len(trials))
            ended = sum(t.status == "TERMINATED" for t in trials)
            before = f" ({ended} of {total} ended before this resume)" if ended else ""
            print(f"trials: {total - ended} to run{before}; a line per trial epoch (at most every {self.every:.0f} s "
                  "per trial)", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        tid = trial.trial_id
        self.last[tid] = result
        self.epochs_seen += 1
        if objective_value(self.ctx.objective, result) is not None:  # an evaluation epoch (or diverged)
            self.evaluated.add(tid)
        ended = result.get(keys.STATUS) in (keys.Status.FINISHED, keys.Status.DIVERGED)
        if ended or time.time() - self.printed.get(tid, 0.0) >= self.every:
            self.printed[tid] = time.time()
            if not ended:
                head = f"epoch {int(result.get(keys.EPOCH, 0))}/{self.epochs}"
                self._print(trials, self.name(trial), self._metrics(tid, head))

    def _metrics(self, tid: str, head: str) -> str:
        result = self.last.get(tid, {})
        objective = f"{result[keys.OBJECTIVE]:.3f}" if tid in self.evaluated and keys.OBJECTIVE in result else "-"
        # Validation accuracy when the trial has a validation split (what selects), else test.
        key, label = (keys.VAL_ACC, "val acc") if keys.VAL_ACC in result else (keys.TEST_ACC, "test acc")
        acc = result.get(key)
        return f"{head}  objective {objective}" + (f"  {label} {acc:.3f}" if isinstance(acc, float) else "")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        result = self.last.get(trial.trial_id, {})
        status = result.get(keys.STATUS) or keys.Status.STOPPED
        if status == keys.Status.RUNNING:
            status = keys.Status.STOPPED  # ended before its last epoch: the scheduler stopped it
        self._print(trials, self.name(trial),
                    self._metrics(trial.trial_id, f"{status} at epoch {int(result.get(keys.EPOCH, 0))}/{self.epochs}"))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(trials, self.name(trial), "failed; retrying from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self._print(trials, self.name(trial), "failed (no retries left)")


LIVE = ("PENDING", "RUNNING", "PAUSED")  # Tune's trial statuses of a trial not yet ended
ENDED = ("TERMINATED", "ERROR")


class Watchdog(tune.Callback, tune.stopper.Stopper):
    """Keeps an Optuna search's budget true to what Tune did, and ends a sweep that idles.

    After every step of Tune's loop it settles the trials Tune ended without telling the searcher
    (a failed actor reuse ends a trial that way; :meth:`search.OptunaSearcher.release_lost`), and
    it tells the budget when Tune restarts a trial. When nothing runs and the searcher proposes
    nothing for ``idle_s`` seconds although the budget can pay for a trial, it prints a line and
    stops the sweep (as Tune's stopper) instead of waiting forever.
    """

    def __init__(self, searcher: search.OptunaSearcher, idle_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.searcher, self.idle_s, self.clock = searcher, idle_s, clock
        self.idle_since: float | None = None
        self.fired = False

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.searcher.budget is not None:
            self.searcher.budget.recovering(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        ended = {t.trial_id: (dict(t.last_result or {}), t.status == "ERROR") for t in trials if t.status in ENDED}
        for trial_id in self.searcher.release_lost(ended):
            print(f"  trial {trial_id} ended without a result for the searcher; its epochs are settled", flush=True)
        budget = self.searcher.budget
        if any(t.status in LIVE for t in trials) or (budget is not None and not budget.can_start()):
            self.idle_since = None
            return
        now = self.clock()
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= self.idle_s and not self.fired:
            self.fired = True
            left = f"{budget.left()} of {budget.total} trial-epochs left" if budget is not None else "no budget set"
            print(f"search: nothing has run for {now - self.idle_since:.0f} s and the searcher proposes nothing "
                  f"({left}); ending the sweep", flush=True)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # stops no single trial

    def stop_all(self) -> bool:
        return self.fired


_WATCHDOG: list[Watchdog] = []  # the last fit's watchdog, for stalled()


def trial_name(ctx: SweepContext, config: dict[str, Any]) -> str:
    """The point's display name of a Tune trial config (a grid point's key, or Optuna's sampled point)."""
    return ctx.name_of(ctx.point_of(config))


def scheduler(cfg: SweepConfig) -> Any:
    """ASHA on the epochs (``scheduler.kind: asha``), or None for Tune's FIFO."""
    if cfg.scheduler.kind == "fifo":
        return None
    return tune.schedulers.ASHAScheduler(
        time_attr=keys.EPOCH,
        max_t=cfg.max_epochs,
        grace_period=cfg.scheduler.grace_period,
        reduction_factor=cfg.scheduler.reduction_factor,
    )


def _trainable_with_resources(cfg: SweepConfig, ctx: SweepContext) -> Any:
    return tune.with_resources(
        tune.with_parameters(_trainable, ctx=ctx), {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    )


def fit(cfg: SweepConfig, ctx: SweepContext, storage_path: str, study_storage: str, resume: bool) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; one summary dict per trial: id, point, last metrics, error."""
    trainable = _trainable_with_resources(cfg, ctx)
    if resume:  # Tune restores the search and scheduler state with the experiment
        tuner = tune.Tuner.restore(
            f"{storage_path.rstrip('/')}/{cfg.name}", trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        setup = search_setup(cfg, list(ctx.points), study_storage)
        watchdog = Watchdog(setup.search_alg) if isinstance(setup.search_alg, search.OptunaSearcher) else None
        _WATCHDOG[:] = [watchdog] if watchdog else []
        budget = setup.search_alg.budget if watchdog else None
        tuner = tune.Tuner(
            trainable,
            param_space=setup.param_space,
            tune_config=tune.TuneConfig(
                metric=setup.metric,
                mode="max" if setup.metric else None,
                search_alg=setup.search_alg,
                scheduler=scheduler(cfg),
                num_samples=setup.num_samples,
                max_concurrent_trials=cfg.max_concurrent_trials or None,
                reuse_actors=True,  # a new trial skips the worker's start and imports (seconds each)
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[
                    _KillSeams(),
                    TrialProgress(ctx, cfg.max_epochs, setup.num_samples * max(1, len(ctx.points)), budget=budget),
                    *([watchdog] if watchdog else []),
                ],
                stop=watchdog,
                verbose=0,  # TrialProgress prints instead of Tune's status tables
            ),
        )
    INTERRUPT.interrupted = False
    handler = signal.getsignal(signal.SIGINT)
    try:
        grid = tuner.fit()
    finally:
        # Tune installs its own SIGINT handler and leaves it after a run it was not interrupted in.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
    out = []
    for result in grid:
        metrics = dict(result.metrics or {})
        metrics.setdefault(POINT, trial_name(ctx, dict(result.config or {})))  # never-started trials too
        out.append(
            {
                "trial_id": metrics.get("trial_id") or Path(result.path).name,
                "config": dict(result.config or {}),  # the point: SweepContext.point_of
                "metrics": metrics,
                "error": str(result.error).strip().splitlines()[-1] if result.error else None,
            }
        )
    return out


def stalled() -> bool:
    """Whether the last :func:`fit` was ended by its watchdog (nothing ran, nothing was proposed)."""
    return bool(_WATCHDOG) and _WATCHDOG[0].fired


def interrupted() -> bool:
    """Whether the last :func:`fit` ended on Ctrl-C (Tune saved its state and stopped the trials)."""
    return INTERRUPT.interrupted
