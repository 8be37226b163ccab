"""The search beyond the grid: a Tune searcher over an Optuna study, on both libraries' public API.

:class:`OptunaSearcher` is a ``ray.tune.search.Searcher`` (Tune's public base class) that asks an
Optuna study for each trial's point (``study.ask``), reports each evaluation as an intermediate
value (``trial.report``) and ends the trial with ``study.tell``: COMPLETE with its final values,
PRUNED when the scheduler stopped it before its last epoch (with the values it reached, which TPE
ranks below complete ones), FAIL when it raised. It replaces a subclass of Ray's ``OptunaSearch``
that had to read three private attributes to do the same.

Resume. Tune pickles the searcher with its experiment state (:meth:`save`, :meth:`restore`): the
sampler (so a restored searcher proposes what the killed one would have), the budget and, per Tune
trial, its point and the values it reported. The study itself lives in its RDB storage. Before a
resume the driver marks the trials a killed driver left RUNNING as failed
(:func:`fail_stale_trials`); a trial that then goes on under the restored searcher has no live
Optuna handle, so its result enters the study as a new trial with the same point
(``study.add_trial``) when it ends, and the sampler still learns from it.

Budget. With an :class:`sweep.budget.EpochBudget` the searcher proposes a trial only when the
budget can pay for all its epochs, waits while running trials may hand epochs back, and tells Tune
it is finished once none can. :meth:`release_lost` settles trials Tune ended without telling the
searcher (a failed actor reuse).

Replication (``search.replicate``, :class:`Replication`). Part of the budget retrains the current
incumbents (the ``top_k`` points by mean objective over their ended seeds) on new training seeds.
Before each proposal the searcher checks whether a replicate is due: an incumbent lacks one of the
replicate seeds (the incumbent with the fewest seeds started first, then by rank) and the
replicates' committed epochs, with one more trial, stay within ``share`` of all committed epochs.
A replicate is its own Tune trial, whose config is the point's plus :data:`POINT_SEED`, so its
MLflow run is keyed by the point and that seed. Optuna is told of it when it ends, as a trial of
its own added with ``study.add_trial`` (never asked from the sampler, never in its queue) with the
point's params and the user attributes ``seed`` and ``replicate_of`` (the Optuna number of the
point's first trial); every trial of a replicating search carries ``seed``. The sampler thus sees
each seed's value as one more observation at the point, as TPE should weigh repeated evidence, and
the study's reader tells two seeds of one point from two points by those attributes. The
search's choice is :func:`choose` over the points' seeds (the mean, or its lower bound with the
pooled run-to-run variance); Optuna's ``best_trial`` is one seed's value and is not the choice.

The grid replicates through the same class (:func:`grid_searcher`): a study in memory over one
categorical parameter, the grid point's key, whose queue holds the grid's points in a seeded random
order; it proposes nothing else but replicates, and ends when neither is left.
"""

from __future__ import annotations

import logging
import math
import pickle
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweep import warmstart
from sweep.budget import EpochBudget
from sweep.config import SweepConfig
from sweep.choice import Choice, PointId, SeedValue, choose, describe, point_id, ranked
from sweep.points import OPTUNA_DIGITS, POINT_KEY, POINT_SEED, Point, apply_point, grid_points, point_name, point_names
from trainer import keys

log = logging.getLogger(__name__)
Study = optuna.study.Study
TrialState = optuna.trial.TrialState
SEED_ATTR = "seed"  # Optuna user attribute of a replicating search's trials: the training seed
REPLICATE_ATTR = "replicate_of"  # a replicate's: the Optuna trial number of its point's first seed


@dataclass(frozen=True)
class Replication:
    """``search.replicate`` with its seeds resolved (:meth:`SweepConfig.replicate_seeds`)."""

    top_k: int
    seeds: tuple[int, ...]
    share: float
    choose: str = "mean"  # "mean" or "lower": the rule of :func:`choose`

    @classmethod
    def of(cls, cfg: SweepConfig) -> Replication | None:
        rep = cfg.search.replicate
        return None if rep is None else cls(rep.top_k, tuple(cfg.replicate_seeds()), rep.share, rep.choose)


@dataclass(frozen=True)
class Names:
    """Display names of a sweep's points without their seed (``sm λ1e-4 μ1e-3``), for the lines a
    replicating searcher prints; picklable with it (a grid's names by point key, else from the base
    trainer config as sweep.trial names an Optuna point)."""

    base: dict[str, Any]
    grid: dict[str, str]
    seed: int

    @classmethod
    def of(cls, cfg: SweepConfig) -> Names:
        base = cfg.trainer.model_dump()
        points = grid_points(cfg.search) if cfg.search.method == "grid" else []
        return cls(base, point_names(base, points), cfg.search.seeds[0])

    def __call__(self, params: Mapping[str, Any]) -> str:
        if POINT_KEY in params:
            name = self.grid.get(params[POINT_KEY], str(params[POINT_KEY]))
        else:
            point = Point(point_id(params), self.seed)
            name = point_name(apply_point(self.base, point), point, OPTUNA_DIGITS)
        head, sep, tail = name.rpartition(f" s{self.seed}")
        return head + tail if sep else name


class OptunaSearcher(Searcher):
    """Tune's searcher over the Optuna study ``study_name`` in ``storage`` (module docstring)."""

    def __init__(
        self,
        space: Mapping[str, optuna.distributions.BaseDistribution],
        metric: str | list[str],
        study_name: str,
        storage: str | optuna.storages.BaseStorage,
        sampler: optuna.samplers.BaseSampler | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] = (),
        budget: EpochBudget | None = None,
        replication: Replication | None = None,
        seed: int = 0,
        explore: bool = True,
        names: Names | None = None,
    ) -> None:
        objectives = metric if isinstance(metric, list) else [metric]
        if replication is not None and (budget is None or len(objectives) > 1):
            raise ValueError("replication needs an epoch budget (its share is of the budget) and one objective")
        super().__init__(metric=metric if isinstance(metric, str) else None, mode="max")
        self.objectives = objectives
        self.space = dict(space)
        self.sampler = sampler
        self.study_name = study_name
        self.storage = optuna.storages.RDBStorage(storage) if isinstance(storage, str) else storage
        self.budget = budget
        self.replication = replication
        self.seed = seed  # the training seed of every trial that is not a replicate
        self.explore = explore  # False (a grid): propose the queued points, then replicates only
        self.names = names  # set: print a line whenever the search's choice changes
        # Per Tune trial: the point it was given, its Optuna trial number, and the objective it
        # reported at each epoch (what becomes the Optuna trial's intermediate values).
        self.points: dict[str, dict[str, Any]] = {}
        self.numbers: dict[str, int] = {}
        self.steps: dict[str, dict[int, float]] = {}
        self.reported: dict[str, set[int]] = {}  # epochs already told to the live Optuna trial
        self.completed: set[str] = set()
        self._init_replication()
        self._live: dict[str, optuna.trial.Trial] = {}  # handles of this process's asks (not pickled)
        self.study = self._open()
        for point in points_to_evaluate:
            self.study.enqueue_trial(dict(point))  # asked first, in this order

    def _init_replication(self) -> None:
        # Per point (PointId): the final values of its seeds that ended, the seeds started (so a
        # replicate runs once), and the Optuna number of its first trial (replicate_of).
        self.finals: dict[PointId, dict[int, SeedValue]] = {}
        self.started: dict[PointId, set[int]] = {}
        self.first: dict[PointId, int] = {}
        self.seed_of: dict[str, int] = {}  # Tune trial id -> its training seed (replicates)
        self.replicates: set[str] = set()  # Tune trial ids of replicates
        self.chosen: PointId | None = None  # the choice last printed

    def _open(self) -> Study:
        return optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                   directions=["maximize"] * len(self.objectives), load_if_exists=True)

    # -- pickling: Tune saves the searcher with its experiment state ----------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_live", None)
        state.pop("study", None)  # reopened from the storage
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._live = {}
        self.study = self._open()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))

    # -- Tune's calls ---------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        if self.budget is not None and trial_id not in self.points:
            if not self.budget.can_start():
                return Searcher.FINISHED if self.budget.exhausted() else None  # None: ask again later
            due = self._due()
            if due is not None:
                return self._replicate(trial_id, *due)
            if not self.explore and not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                # The grid is proposed; a trial still running may make a replicate due when it ends.
                return None if self.budget.running else Searcher.FINISHED
            self.budget.start(trial_id)
        trial = self.study.ask(fixed_distributions=self.space)
        self._live[trial_id] = trial
        self.points[trial_id], self.numbers[trial_id] = dict(trial.params), trial.number
        if self.replication is not None:
            trial.set_user_attr(SEED_ATTR, self.seed)
            pid = point_id(trial.params)
            self.started.setdefault(pid, set()).add(self.seed)
            self.first.setdefault(pid, trial.number)
        return dict(trial.params)

    # -- replication ----------------------------------------------------------------------------
    def _due(self) -> tuple[PointId, int] | None:
        """The replicate to start now (point, seed), or None: an incumbent (top_k by mean) lacks a
        replicate seed, fewest seeds started first, and the share allows one more."""
        rep, budget = self.replication, self.budget
        if rep is None or budget is None:
            return None
        per = budget.per_trial
        if budget.committed_by(self.replicates) + per > rep.share * (budget.committed() + per):
            return None
        best: tuple[tuple[int, int], PointId, int] | None = None
        for rank, pid in enumerate(ranked(self.values())[: rep.top_k]):
            missing = [s for s in rep.seeds if s not in self.started.get(pid, set())]
            order = (len(rep.seeds) - len(missing), rank)
            if missing and (best is None or order < best[0]):
                best = (order, pid, missing[0])
        return None if best is None else best[1:]

    def _replicate(self, trial_id: str, pid: PointId, seed: int) -> dict[str, Any]:
        assert self.budget is not None
        self.budget.start(trial_id)
        self.points[trial_id], self.seed_of[trial_id] = dict(pid), seed
        self.replicates.add(trial_id)
        self.started.setdefault(pid, set()).add(seed)
        log.debug("search: replicating %s on seed %d", dict(pid), seed)
        return {**dict(pid), POINT_SEED: seed}

    def values(self) -> dict[PointId, list[SeedValue]]:
        """Each point's ended seeds' (value, diverged), for :func:`ranked` and :func:`choose`."""
        return {pid: list(by_seed.values()) for pid, by_seed in self.finals.items()}

    def incumbent(self) -> Choice[dict[str, Any]] | None:
        """The search's choice now, by ``search.replicate.choose`` (the best mean without
        replication); its point as params (a grid: ``{point_key: key}``)."""
        choice = choose(self.values(), self.replication.choose if self.replication else "mean")
        if choice is None:
            return None
        return Choice(dict(choice.point), choice.estimate, choice.seeds, choice.pool, choice.rule)

    def _announce(self) -> None:
        """Print the search's choice when it changed (with ``names``: a live sweep, not the replay)."""
        choice = self.incumbent()
        if self.names is None or choice is None or point_id(choice.point) == self.chosen:
            return
        self.chosen = point_id(choice.point)
        print(f"  search: its choice is now {self.names(choice.point)}, {describe(choice)}", flush=True)

    def _value(self, result: Mapping[str, Any] | None) -> tuple[int, float] | None:
        """(epoch, objective) of a single-objective result, or None."""
        if len(self.objectives) > 1 or not result:
            return None
        value, epoch = result.get(self.objectives[0]), result.get(keys.EPOCH)
        return None if value is None or epoch is None else (int(epoch), float(value))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.budget is not None:
            self.budget.result(trial_id, result.get(keys.EPOCH))
        found = self._value(result)
        if found is None or trial_id in self.completed or trial_id not in self.points:
            return
        epoch, value = found
        self.steps.setdefault(trial_id, {})[epoch] = value
        self._report(trial_id, epoch, value)

    def _running(self, trial_id: str) -> optuna.trial.Trial | None:
        """This process's handle of the trial's Optuna trial while the study still has it running
        (a resume marks a killed driver's trials failed: then there is none)."""
        trial = self._live.get(trial_id)
        if trial is None:
            return None
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if trial.number not in {t.number for t in running}:
            del self._live[trial_id]
            return None
        return trial

    def _report(self, trial_id: str, epoch: int, value: float) -> None:
        told = self.reported.setdefault(trial_id, set())
        if epoch not in told and (trial := self._running(trial_id)) is not None:
            trial.report(value, epoch)  # step: the epoch, as ASHA's
            told.add(epoch)

    def _outcome(self, result: Mapping[str, Any] | None, error: bool) -> tuple[TrialState, list[float] | None]:
        """The Optuna state and values of an ended trial's last result."""
        values = [result.get(m) for m in self.objectives] if result and not error else None
        if not values or any(v is None for v in values):
            return (TrialState.FAIL if error else TrialState.PRUNED), None
        stopped = result.get(keys.STATUS) in (keys.Status.RUNNING, keys.Status.STOPPED)  # before its last epoch
        if stopped and len(self.objectives) == 1:  # the scheduler stopped it
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, [float(v) for v in values]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.budget is not None:
            self.budget.end(trial_id, (result or {}).get(keys.EPOCH))
        if trial_id in self.completed or trial_id not in self.points:
            return
        found = self._value(result) if not error else None
        if found is not None:  # the stopping result reaches only here (Tune skips on_trial_result)
            self.steps.setdefault(trial_id, {})[found[0]] = found[1]
            self._report(trial_id, *found)
        state, values = self._outcome(result, error)
        pid, seed = point_id(self.points[trial_id]), self.seed_of.get(trial_id, self.seed)
        if self.replication is not None and state == TrialState.COMPLETE and values and math.isfinite(values[0]):
            diverged = (result or {}).get(keys.STATUS) == keys.Status.DIVERGED
            self.finals.setdefault(pid, {})[seed] = (float(values[0]), diverged)
            self._announce()
        trial = self._running(trial_id)
        self._live.pop(trial_id, None)
        try:
            if trial is not None:
                self.study.tell(trial, values, state=state)
            elif trial_id in self.replicates:  # never asked: it enters the study when it ends
                attrs = {SEED_ATTR: seed, REPLICATE_ATTR: self.first.get(pid)}
                self._add(trial_id, state, values, attrs)
            elif state != TrialState.FAIL:
                # Asked by a driver that is gone (a resumed sweep): that Optuna trial was marked
                # failed; the result enters the study as a new trial of the same point.
                attrs = {SEED_ATTR: seed} if self.replication is not None else {}
                number = self._add(trial_id, state, values, attrs)
                if self.replication is not None:
                    self.first[pid] = number  # the point's result lives in the new trial now
        except (ValueError, RuntimeError) as exc:  # a NaN value: logged, as Ray's own searcher does
            log.warning("optuna: %s", exc)
        self.completed.add(trial_id)

    def _add(self, trial_id: str, state: TrialState, values: list[float] | None, attrs: dict[str, Any]) -> int:
        """Add the ended trial to the study as a new trial of its point; returns its number."""
        self.study.add_trial(optuna.trial.create_trial(
            params=self.points[trial_id], distributions=self.space, values=values, state=state,
            intermediate_values=self.steps.get(trial_id) or None, user_attrs=attrs,
        ))  # fmt: skip
        return self.study.get_trials(deepcopy=False)[-1].number  # this process is the study's one writer

    def release_lost(self, ended: Mapping[str, tuple[dict, bool]]) -> list[str]:
        """Settle trials Tune ended (``ended``: trial id -> (last result, errored)) without telling
        the searcher, e.g. when reusing an actor failed: their reservation returns to the budget and
        their Optuna trial is told its end. Returns their ids."""
        lost = [t for t in ended if t in self.points and t not in self.completed]
        for trial_id in lost:
            result, error = ended[trial_id]
            self.on_trial_complete(trial_id, result or None, error=error)
        return lost


def _tpe(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    """TPE that models λ and μ jointly (multivariate) and, while trials run, proposes as if each
    running trial had scored the worst so far (constant_liar), so concurrent proposals spread out
    instead of all coming from one model."""
    with warnings.catch_warnings():  # both options are "experimental" in Optuna 4-5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)


def _qmc(seed: int, startup: int) -> optuna.samplers.BaseSampler:
    """A scrambled Sobol sequence: random search that covers the space more evenly; it learns nothing."""
    with warnings.catch_warnings():  # "experimental" in Optuna 4-5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)


# search.sampler -> Optuna sampler for (seed, startup trials); tpe, random and qmc handle one
# objective and several, nsga2 several. random is the baseline the replay benchmark compares TPE with.
SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda seed, startup: optuna.samplers.RandomSampler(seed=seed),
    "qmc": _qmc,
    "nsga2": lambda seed, startup: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(startup, 2)),
}


def searcher(cfg: SweepConfig, study_storage: str | optuna.storages.BaseStorage, announce: bool = True) -> OptunaSearcher:
    """The searcher of an Optuna sweep; ``study_storage`` is an RDB URL (or, for the replay
    benchmark, a storage object such as Optuna's in-memory one). ``announce``: a replicating
    search prints its choice whenever it changes (the replay passes False)."""
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
    per_trial = min(cfg.max_epochs, cfg.trainer.epochs)
    total = search.max_epochs_total
    if total is None and search.replicate is not None:
        total = search.n_trials * per_trial  # the ledger replication's share is of; n_trials limits
    return OptunaSearcher(
        space=space,
        metric=list(search.objectives) if multi else search.objectives[0],
        study_name=cfg.name,
        storage=study_storage,
        sampler=SAMPLERS[search.sampler](search.sampler_seed, search.startup_trials),
        points_to_evaluate=seeds,
        budget=EpochBudget(total, per_trial) if total else None,
        replication=Replication.of(cfg),
        seed=search.seeds[0],
        names=Names.of(cfg) if announce and search.replicate is not None else None,
    )


def grid_order(cfg: SweepConfig, point_keys: Sequence[str]) -> list[str]:
    """The order a replicating grid proposes its points in: shuffled with ``search.sampler_seed``,
    so the grid covered when a share of it has run is a random part of it (as Tune's grid is
    shuffled under ASHA)."""
    order = list(point_keys)
    random.Random(cfg.search.sampler_seed).shuffle(order)
    return order


def grid_searcher(cfg: SweepConfig, point_keys: Sequence[str], announce: bool = True) -> OptunaSearcher:
    """The searcher of a grid sweep with ``search.replicate``: the grid's points (by key, in
    :func:`grid_order`), then replicates of its incumbents, within a ledger of the grid's
    trial-epochs over 1 − share (the grid runs whole, and replicates get their share on top).
    ``announce``: print the search's choice whenever it changes (the replay passes False)."""
    rep = cfg.search.replicate
    if rep is None:
        raise ValueError("grid_searcher: the grid replicates only with search.replicate")
    order = grid_order(cfg, point_keys)
    per_trial = min(cfg.max_epochs, cfg.trainer.epochs)
    total = math.ceil(len(order) * per_trial / (1 - rep.share))
    return OptunaSearcher(
        space={POINT_KEY: optuna.distributions.CategoricalDistribution(order)},
        metric=cfg.search.objectives[0],
        study_name=cfg.name,
        storage=optuna.storages.InMemoryStorage(),  # pickled with the searcher: it resumes with Tune's state
        sampler=optuna.samplers.RandomSampler(seed=cfg.search.sampler_seed),  # never asked: the queue is the grid
        points_to_evaluate=[{POINT_KEY: key} for key in order],
        budget=EpochBudget(total, per_trial),
        replication=Replication.of(cfg),
        seed=cfg.search.seeds[0],
        explore=False,
        names=Names.of(cfg) if announce else None,
    )


def grid_trials(cfg: SweepConfig, points: int) -> int:
    """Most Tune trials a replicating grid of ``points`` points runs (Tune's ``num_samples``): each
    point once, and each replicate seed of every point that may become an incumbent."""
    rep = cfg.search.replicate
    return points * (1 + (rep.seeds if rep is not None else 0))


def fail_stale_trials(study: str, storage: str) -> int:
    """Mark the trials a killed driver left RUNNING as failed (Optuna would wait on them forever),
    with ``study.tell`` by trial number; returns how many."""
    try:
        s = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return 0
    stale = s.get_trials(deepcopy=False, states=[TrialState.RUNNING])
    for t in stale:
        s.tell(t.number, state=TrialState.FAIL)
    return len(stale)


