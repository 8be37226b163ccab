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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# The classic reporter lets us choose the columns (Ray's new output ignores a passed reporter);
# the checkpoint-sync warning fires on every epoch of tiny trials and says nothing actionable.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import optuna  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from sweep import warmstart  # noqa: E402
from sweep.budget import EpochBudget  # noqa: E402
from sweep.config import SweepConfig  # noqa: E402
from sweep.points import grid_points  # noqa: E402
from sweep.trial import POINT, SweepContext, run_trial  # noqa: E402
from trainer import keys  # noqa: E402

# Reporter columns: metric key -> header (the point's name comes first).
COLUMNS = {
    keys.EPOCH: "epoch",
    keys.TEST_ACC: "acc",
    keys.GAN_TEST: "gan_test",
    keys.OBJECTIVE: "objective",
}


def start(address: str | None) -> None:
    """Connect to the cluster at ``address`` (or RAY_ADDRESS), else start a private local one."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    # log_to_driver=False keeps trainer chatter off the terminal; Tune still prints each trial's
    # error and the path of its full traceback.
    ray.init(
        address=address,
        log_to_driver=False,
        logging_level=logging.WARNING,
        include_dashboard=False if address == "local" else None,  # a laptop sweep needs no dashboard
    )


def stop() -> None:
    ray.shutdown()


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


@ray.remote
def _call(fn: Callable[[], str]) -> str:
    return fn()


def run_task(fn: Callable[[], str], cfg: SweepConfig) -> str:
    """Run ``fn()`` once as a Ray task with a trial's resources, retried as often as a trial."""
    ref = _call.options(
        num_cpus=cfg.resources.cpus,
        num_gpus=cfg.resources.gpus,
        max_retries=cfg.failure.max_failures,  # -1: forever, as Tune's max_failures
        retry_exceptions=True,  # like a trial: an exception retries too, not only a lost worker
    ).remote(fn)
    return ray.get(ref)


# Private attributes of Ray's OptunaSearch that ResumableOptunaSearch relies on; pyproject.toml
# pins Ray to the versions this was checked against, and a test fails first if one disappears.
OPTUNA_SEARCH_INTERNALS = ("_ot_trials", "_ot_study", "_completed_trials")


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that survives ``fail_stale_optuna_trials``.

    A resumed Tune trial keeps the Optuna trial it was given, which the resume marked failed;
    Optuna refuses reports on finished trials and the stock searcher would crash the sweep. This
    one skips those reports and, when the trial completes, records its result as a new complete
    Optuna trial with the same parameters, so the sampler still learns from it. It reads the
    private state in :data:`OPTUNA_SEARCH_INTERNALS`: Ray offers no public way to do this.

    With a ``budget`` (:class:`sweep.budget.EpochBudget`) it proposes a trial only when the
    budget can pay for all its epochs, waits while running trials may hand epochs back, and
    tells Tune it is finished once none can; the budget is pickled with the searcher, so a
    resumed sweep keeps its account.
    """

    def __init__(self, *args: Any, budget: EpochBudget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.budget is not None and trial_id not in self._ot_trials:
            if not self.budget.can_start():
                return Searcher.FINISHED if self.budget.exhausted() else None  # None: ask again later
            self.budget.start(trial_id)
        return super().suggest(trial_id)

    def _was_failed(self, trial_id: str) -> bool:
        ot = self._ot_trials.get(trial_id)
        failed = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        return ot is not None and ot.number in {t.number for t in failed}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.budget is not None:
            self.budget.result(trial_id, result.get(keys.EPOCH))
        if not self._was_failed(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.budget is not None:
            self.budget.end(trial_id, (result or {}).get(keys.EPOCH))
        if trial_id in self._completed_trials or not self._was_failed(trial_id):
            return super().on_trial_complete(trial_id, result, error)
        ot = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [result.get(m) for m in metrics] if result and not error else []
        if values and all(v is not None for v in values):
            self._ot_study.add_trial(
                optuna.trial.create_trial(params=ot.params, distributions=ot.distributions, values=values)
            )
        self._completed_trials.add(trial_id)


# search.sampler -> Optuna sampler for (seed, startup trials); both handle one objective and several.
SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, startup: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
    "nsga2": lambda seed, startup: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(startup, 2)),
}


def _optuna(cfg: SweepConfig, study_storage: str) -> Any:
    search = cfg.search
    space = warmstart.distributions(search)
    seeds = []
    if search.seed_with_grid:
        known = warmstart.known_points(cfg.name, study_storage)  # warm-start trials: never rerun
        for p in grid_points(search):
            point = dict(p.overrides)
            if set(point) == set(space) and not any(warmstart.same_point(point, k) for k in known):
                seeds.append(point)
    multi = len(search.objectives) > 1
    return ResumableOptunaSearch(
        space=space,
        metric=search.objectives if multi else search.objectives[0],
        mode=["max"] * len(search.objectives) if multi else "max",
        points_to_evaluate=seeds or None,
        sampler=SAMPLERS[search.sampler](search.sampler_seed, search.startup_trials),
        study_name=cfg.name,
        storage=optuna.storages.RDBStorage(study_storage),
        budget=EpochBudget(search.max_epochs_total, cfg.max_epochs) if search.max_epochs_total else None,
    )


def fail_stale_optuna_trials(study: str, storage: str) -> int:
    """Mark trials a killed driver left RUNNING as failed (Optuna would wait on them forever)."""
    rdb = optuna.storages.RDBStorage(storage)
    try:
        s = optuna.load_study(study_name=study, storage=rdb)
    except KeyError:
        return 0
    stale = s.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING])
    study_id = rdb.get_study_id_from_name(study)
    for t in stale:
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, t.number)
        rdb.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    return len(stale)


@dataclass
class SearchSetup:
    """What the search method decides for Tune, built in one place (:func:`search_setup`)."""

    param_space: dict[str, Any]
    search_alg: Any  # None: Tune's own grid
    num_samples: int
    metric: str | None  # None: several objectives, the searcher knows them
    parameter_columns: dict[str, str]  # reporter: grid trials carry their name in the config...
    metric_columns: dict[str, str]  # ... Optuna's report it as a metric


def search_setup(cfg: SweepConfig, points: list[str], study_storage: str) -> SearchSetup:
    """The grid over the point names, or Optuna over ``search.space``."""
    if cfg.search.method == "grid":
        names = list(points)
        if cfg.scheduler.kind == "asha":
            # ASHA judges each trial against those that reached a rung before it; a grid in
            # config order (often worst λ first) would never be cut, so run it shuffled.
            random.Random(0).shuffle(names)
        return SearchSetup({POINT: tune.grid_search(names)}, None, 1, keys.OBJECTIVE, {POINT: "point"}, COLUMNS)
    objectives = cfg.search.objectives
    return SearchSetup(
        param_space={},
        search_alg=_optuna(cfg, study_storage),
        num_samples=cfg.search.n_trials,
        metric=objectives[0] if len(objectives) == 1 else None,
        parameter_columns={},
        metric_columns={POINT: "point", **COLUMNS},
    )


def _scheduler(cfg: SweepConfig) -> Any:
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
        search = search_setup(cfg, list(ctx.points), study_storage)
        tuner = tune.Tuner(
            trainable,
            param_space=search.param_space,
            tune_config=tune.TuneConfig(
                metric=search.metric,
                mode="max" if search.metric else None,
                search_alg=search.search_alg,
                scheduler=_scheduler(cfg),
                num_samples=search.num_samples,
                max_concurrent_trials=cfg.max_concurrent_trials or None,
                reuse_actors=True,  # a new trial skips the worker's start and imports (seconds each)
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                progress_reporter=tune.CLIReporter(
                    parameter_columns=search.parameter_columns,
                    metric_columns=search.metric_columns,
                    max_column_length=28,
                    max_report_frequency=20,  # seconds between tables
                ),
                verbose=1,
            ),
        )
    grid = tuner.fit()
    out = []
    for result in grid:
        metrics = dict(result.metrics or {})
        out.append(
            {
                "trial_id": metrics.get("trial_id") or Path(result.path).name,
                "metrics": metrics,
                "error": str(result.error).strip().splitlines()[-1] if result.error else None,
            }
        )
    return out
