"""The Tuner over the sweep's points: grid or the Optuna searcher, FIFO or ASHA, retries, restore.

:func:`fit` runs (or resumes) the sweep's trials and returns one summary per trial (id, point,
last metrics, error); :func:`interrupted` and :func:`stalled` say how the last fit ended.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from sweep import kill_points, search
from sweep.engine import storage
from sweep.engine.progress import Stalls, TrialProgress, forget_stalls, stall_error, trial_name
from sweep.engine.trainable import trainable_of
from sweep.engine.watchdog import Watchdog, forget_watchdog, watchdog_fired
from sweep.config import SweepConfig
from sweep.trial import POINT, POINT_KEY, SweepContext
from trainer import keys

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



class _KillSeams(tune.Callback):
    """The driver-side points of :mod:`sweep.kill_points` (a test seam; a no-op unless its variable is set)."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(keys.EPOCH, 0) >= 2:  # so the first epoch's checkpoint is in Tune's state
            kill_points.kill_point("result")



# Tune keeps every checkpoint a trial reports; the trial deletes its older ones itself
# (sweep.engine.trainable.drop_older), so storage holds one per trial. A num_to_keep would make Tune
# save and sync the whole experiment state (about 30 kB per trial) after every num_to_keep
# checkpoints of any trial (ray/tune/execution/experiment_state.py, on_trial_checkpoint): with 1,
# after every epoch of every trial, a cost per trial that grows with the number of trials. Without
# it Tune saves the state every 10 s or more (19 times as long as a save takes).
CHECKPOINTS = tune.CheckpointConfig(num_to_keep=None)

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

    def trials(self) -> int:
        """Most Tune trials this runs: ``num_samples`` per value of Tune's ``grid_search``, or a
        searcher's ``num_samples`` itself (a replicating grid's bound counts its replicates)."""
        grid = self.param_space.get(POINT_KEY)
        return self.num_samples * (len(grid["grid_search"]) if grid else 1)


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



def can_restore(path: str) -> bool:
    """Whether Ray results of a sweep exist at ``path`` (local or s3://)."""
    return tune.Tuner.can_restore(path)


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


def fit(cfg: SweepConfig, ctx: SweepContext, storage_path: str, study_storage: str, resume: bool) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; one summary dict per trial: id, point, last metrics, error."""
    trainable = trainable_of(cfg, ctx)
    filesystem = storage.filesystem_for(storage_path)  # a local storage's files are replaced whole
    if resume:  # Tune restores the search and scheduler state with the experiment
        tuner = tune.Tuner.restore(
            f"{storage_path.rstrip('/')}/{cfg.name}", trainable=trainable, resume_unfinished=True, resume_errored=True,
            storage_filesystem=filesystem,
        )
    else:
        setup = search_setup(cfg, list(ctx.points), study_storage)
        watchdog = Watchdog(setup.search_alg) if isinstance(setup.search_alg, search.OptunaSearcher) else None
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
                storage_filesystem=filesystem,
                failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
                checkpoint_config=CHECKPOINTS,
                callbacks=[
                    _KillSeams(),
                    TrialProgress(ctx, cfg.max_epochs, setup.trials(), budget=budget),
                    *([watchdog] if watchdog else []),
                    Stalls(ctx, cfg.trial_timeout),
                ],
                stop=watchdog,
                verbose=0,  # TrialProgress prints instead of Tune's status tables
            ),
        )
    INTERRUPT.interrupted = False
    forget_stalls()
    forget_watchdog()
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
        trial_id = metrics.get("trial_id") or Path(result.path).name
        error = str(result.error).strip().splitlines()[-1] if result.error else None
        if error:  # ended by trial_timeout: say so, not Ray's "the actor died"
            error = stall_error(trial_id) or error
        out.append(
            {
                "trial_id": trial_id,
                "config": dict(result.config or {}),  # the point: SweepContext.point_of
                "metrics": metrics,
                "error": error,
            }
        )
    return out


def stalled() -> bool:
    """Whether the last :func:`fit` was ended by its watchdog (nothing ran, nothing was proposed)."""
    return watchdog_fired()


def interrupted() -> bool:
    """Whether the last :func:`fit` ended on Ctrl-C (Tune saved its state and stopped the trials)."""
    return INTERRUPT.interrupted
