"""The sweep's config schema: what to train, which points to try, where results go.

A sweep config embeds a full :class:`trainer.config.TrainConfig` (the base every trial starts
from) and describes the points as dotted overrides of that base (``loss.lam``, ``loss.mu``, ...).
Each field carries its meaning and unit. Reading YAML and ``--set`` overrides is
:mod:`sweep.config_files`, expanding the points :mod:`sweep.points`, resolving paths and environment
variables :mod:`sweep.paths`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer import keys
from trainer.config import TrainConfig, validate

MAX_NAME = 100  # characters of a sweep or experiment name


class _Strict(BaseModel):
    # extra="forbid": a typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A continuous search range for Optuna."""

    low: float
    high: float
    log: bool = True  # sample log-uniformly (the paper's weights span decades)

    @model_validator(mode="after")
    def _check(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; inside lists and mappings too. Make such strings floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


# Metrics Optuna may maximize directly (search.objectives); none is measured on test images.
SEARCH_OBJECTIVES = frozenset({keys.OBJECTIVE, keys.VAL_ACC, keys.GAN_TEST})
# Objectives that read one ground-truth metric of a known-density dataset (trainer.groundtruth).
GROUNDTRUTH_OBJECTIVES = {
    "score_alignment": keys.SCORE_ALIGNMENT,
    "fisher_divergence": keys.FISHER_DIVERGENCE,
}
# Both are measured on the test images: choosing by them is choosing by test data.
ON_TEST_IMAGES = frozenset({"score_alignment", "fisher_divergence"})
# Metrics that are reported but may not select, with the reason. The sample log-likelihood cannot
# separate alignment from flatness: samples left at the sampler's start (-1.25 nats/dim) and a
# model with zero input gradient (-1.07) score higher than every score-matching cell (-1.5 to
# -2.4) and the baseline (-5.8) on the testbed, so maximizing it would pick the flattest model.
# The trainer logs both controls beside it (eval/sample_loglik_start, eval/sample_loglik_flat).
_FLAT_WINS = (
    "rewards flat models: samples left at the sampler's start and a model with zero input gradient score "
    "higher than any trained model, so it cannot tell alignment from flatness; it is reported beside its "
    "controls (eval/sample_loglik_start, eval/sample_loglik_flat), never used to select"
)
NOT_SELECTABLE = {"sample_loglik": _FLAT_WINS, keys.SAMPLE_LOGLIK: _FLAT_WINS}  # objective.name, search.objectives
ACCURACY_OBJECTIVES = frozenset({"weighted", "harmonic", "accuracy"})  # those that read accuracy


class SearchConfig(_Strict):
    """Which trainer configs to try: a grid (plus explicit points) or an Optuna search."""

    method: Literal["grid", "optuna"] = "grid"
    # Grid axes: dotted trainer key -> values; trials are their Cartesian product.
    grid: dict[str, list[Any]] = {}
    # Extra explicit points, each a mapping of dotted trainer keys (e.g. the baseline
    # ``{loss.preset: baseline}``; a ``loss.preset`` replaces the base loss section).
    points: list[dict[str, Any]] = []
    seeds: list[int] = Field([0], min_length=1)  # a grid axis over trainer seeds
    # Optuna only.
    space: dict[str, Range] = {}  # dotted trainer key -> range
    n_trials: int = Field(20, ge=1)  # trials Optuna proposes (grid points seeded first count too)
    objectives: list[str] = [keys.OBJECTIVE]  # one metric, or several for a multi-objective front
    sampler_seed: int = 0  # seed of Optuna's sampler
    # Optuna's TPESampler (multivariate, constant liar), RandomSampler, QMCSampler (scrambled Sobol)
    # or NSGAIISampler (docs/sweep.md)
    sampler: Literal["tpe", "random", "qmc", "nsga2"] = "tpe"
    # Completed trials (warm-start ones included) the sampler draws at random before it models:
    # TPE's n_startup_trials, NSGA-II's population_size (at least 2). Optuna's TPE default is 10.
    startup_trials: int = Field(10, ge=1)
    # Trial-epochs (one epoch of one trial) the search may train in all; a trial starts only when
    # the budget can pay for all its epochs. None: n_trials alone limits the search.
    max_epochs_total: int | None = Field(None, ge=1)
    seed_with_grid: bool = True  # evaluate the grid's points first (Optuna's points_to_evaluate)
    storage: str | None = None  # Optuna RDB URL; None: sqlite beside the Ray results
    # Most points a grid may expand to (axes x points x seeds), checked before expanding it.
    max_points: int = Field(10_000, ge=1)
    # Earlier sweeps (names in warm_start_experiment) whose finished and diverged trials enter the
    # study as completed trials before the first proposal; they are never run again.
    warm_start: list[str] = []
    warm_start_experiment: str | None = None  # MLflow experiment of those sweeps; None: this sweep's

    @field_validator("grid", "points", mode="before")
    @classmethod
    def _read_numbers(cls, v: Any) -> Any:
        return _numbers(v)

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
        return v

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, v: list[str]) -> list[str]:
        test = [m for m in v if m.startswith("test/")]
        if test:
            raise ValueError(
                f"{', '.join(test)} is test-set data and cannot select (Optuna, ASHA and best.pt rank by "
                f"these); use {keys.VAL_ACC}, the validation split's accuracy (test metrics are still "
                "reported for every trial)"
            )
        if keys.FISHER_DIVERGENCE in v:
            raise ValueError(
                f"{keys.FISHER_DIVERGENCE} is minimized and Optuna maximizes these; use "
                f"objective.name: fisher_divergence with {keys.OBJECTIVE} (its negative)"
            )
        for m in v:
            if m in NOT_SELECTABLE:
                raise ValueError(f"{m} {NOT_SELECTABLE[m]}")
        bad = [m for m in v if m not in SEARCH_OBJECTIVES]
        if bad or not v or len(set(v)) != len(v):
            raise ValueError(f"must be distinct metrics from {sorted(SEARCH_OBJECTIVES)}, not {v}")
        return v


class SchedulerConfig(_Strict):
    """Early stopping: FIFO runs every trial to the end; ASHA stops weak ones at rungs."""

    kind: Literal["fifo", "asha"] = "fifo"
    max_t: int | None = Field(None, ge=1)  # epochs; None: the trainer's epochs
    grace_period: int = Field(1, ge=1)  # epochs before the first rung
    reduction_factor: float = Field(3.0, gt=1)  # keep 1/reduction_factor of trials at each rung


class ResourcesConfig(_Strict):
    """Resources each trial reserves; fractional GPUs share a card between trials."""

    cpus: float = Field(1.0, gt=0)
    # GPUs per trial, the packing knob: 1/N packs N trials on each GPU (0.25: four). Preflight
    # refuses a packing whose trials' estimated memory (trainer.memory) exceeds gpu_memory_gib.
    gpus: float = Field(0.0, ge=0)
    # Memory of one GPU of the workers, in GiB (2^30 bytes); None: unknown, the packing is not
    # checked against memory (a note says so).
    gpu_memory_gib: float | None = Field(None, gt=0)


class ObjectiveConfig(_Strict):
    """The objective reported as ``eval/objective`` (maximized): what ASHA, Optuna and best.pt use.

    weighted, harmonic, accuracy and gan_test combine accuracy and GAN-test into [0, 1];
    score_alignment (a cosine, in [-1, 1]) and fisher_divergence (negated: minus the mean squared
    distance to the true score) read one ground-truth metric of the ``gaussians`` dataset
    (sample_loglik is refused: :data:`NOT_SELECTABLE`).
    """

    name: Literal["weighted", "harmonic", "accuracy", "gan_test", "score_alignment", "fisher_divergence"] = "weighted"
    weight: float = Field(0.5, ge=0, le=1)  # weighted: weight of accuracy (GAN-test gets 1-w)
    # The data the objective reads. val: val/acc from the validation split (trainer.data.val_size
    # > 0). test: test/acc, for presets that reproduce a paper table by training on the whole
    # training set (val_size: 0) as the paper did, or a ground-truth metric measured on the test
    # images. Every trial is tagged with it (trial.selection_split) and the analysis says so.
    split: Literal["val", "test"] = "val"

    @field_validator("name", mode="before")
    @classmethod
    def _selectable(cls, v: Any) -> Any:
        if v in NOT_SELECTABLE:
            raise ValueError(f"{v} {NOT_SELECTABLE[v]}")
        return v


class TrackingConfig(_Strict):
    """Where MLflow runs go (the env var MLFLOW_TRACKING_URI overrides ``uri``)."""

    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths resolve against the working directory
    artifacts: str = "./mlruns"  # artifact root for experiments this sweep creates (local stores)


class FailureConfig(_Strict):
    max_failures: int = Field(2, ge=-1)  # retries per trial from its last checkpoint; -1: forever


# Default number of fresh samples a finalist's GAN-test is confirmed on (capped at the test set's
# size by sweep.confirm): a fraction over 1024 samples has a 95 % interval of at most ±0.031.
CONFIRM_SAMPLES = 1024
# The default confirmation sample seed is this much above the largest trainer seed of the sweep, so
# it is never a seed any trial's own evaluation drew its samples with (that seed is the trial's).
CONFIRM_SEED_OFFSET = 100_000


class ConfirmConfig(_Strict):
    """The confirmation stage (sweep.confirm, docs/sweep.md): after the trials, the finalists (the
    best point, then the points on the accuracy/GAN-test front) are re-scored on draws that
    selection never saw, and those numbers are what the sweep reports."""

    enabled: bool = True  # false: no stage; the sweep reports the selection numbers, labelled so
    top_k: int = Field(5, ge=1)  # most finalists re-scored: the best point first, then the front
    # Generated samples per finalist for confirm/gan_test, whatever the test set's size: their
    # targets are the test labels in order, cycled (a smaller test set is gone through again).
    samples: int = Field(CONFIRM_SAMPLES, ge=1)
    # Seed of those samples' starting noise; None: CONFIRM_SEED_OFFSET + the largest trainer seed.
    # Never a seed of search.seeds: a trial's own evaluation drew its samples with its seed.
    sample_seed: int | None = Field(None, ge=0)
    # New training seeds per finalist (0: off): each finalist is trained again from scratch with
    # each of them (see SweepConfig.confirm_train_seeds) and confirmed like the finalist; the best
    # point is then decided on the mean over these new seeds (its own, selected run shown beside,
    # never averaged in), which takes the training seed's noise out of the verdict. Each is a full
    # extra trial: N x top_k more. The CPU presets use 2; the GPU presets state their choice.
    train_seeds: int = Field(0, ge=0)


# The new training seeds of confirm.train_seeds start here: far above the seeds a grid usually
# lists (0, 1, 2, ...), so a retrain is never a trial the sweep already ran.
RETRAIN_SEED_START = 1000


class SweepConfig(_Strict):
    """A whole sweep: the base trainer config, the search, and where everything goes."""

    name: str = "quickstart"  # the sweep's name: Ray experiment dir and MLflow parent run
    experiment: str | None = None  # MLflow experiment; None: the name
    trainer: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    max_concurrent_trials: int = Field(0, ge=0)  # 0: as many as resources allow
    failure: FailureConfig = FailureConfig()
    tracking: TrackingConfig = TrackingConfig()
    storage_path: str = "./sweep_results"  # Ray results; env SWEEP_STORAGE_PATH overrides
    # The GAN-test judge (trainer.judge.JudgeConfig as a mapping; its data defaults to the
    # trainer's). null: no judge, so no GAN-test.
    judge: dict[str, Any] | None = {}
    trial_threads: int = Field(1, ge=1)  # torch threads per trial (CPU trials share cores)
    # Seconds a trial may go without reporting an epoch (from its start, then from each report);
    # past it the trial's worker is ended and the trial fails as "timed out", retried per
    # failure.max_failures (sweep.stall). None: no limit (a silent trial is still named in a line).
    trial_timeout: float | None = Field(None, gt=0)
    analysis: bool = True  # write Table 2 / Pareto to the parent run at the end
    confirm: ConfirmConfig = ConfirmConfig()  # re-score the finalists on fresh draws (sweep.confirm)

    @field_validator("name", "experiment")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        # Both become folder names (results, artifacts), MLflow filter values and words of the
        # printed commands, so they stay short, single path components, one kind of quote.
        if v is None:
            return v
        if not v or len(v) > MAX_NAME or v.startswith(".") or any(c in v for c in "/\\ ") or not v.isprintable():
            raise ValueError(
                f"must be 1 to {MAX_NAME} printable characters without '/', '\\', spaces or a leading "
                f"'.', not {v[:120]!r}" + ("..." if len(v) > 120 else "")
            )
        if "'" in v and '"' in v:
            raise ValueError(f"may hold ' or \" but not both (MLflow's search filters cannot quote it), not {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        needs_gan = self.objective.name in ("weighted", "harmonic", "gan_test") or (
            keys.GAN_TEST in self.search.objectives
        )
        if needs_gan and (self.judge is None or not self.trainer.eval.enabled):
            raise ValueError(
                f"objective.name: {self.objective.name!r} needs GAN-test, but the judge is off "
                "(judge: null or trainer.eval.enabled: false); use objective.name=accuracy"
            )
        self._check_selection()
        self._check_confirm()
        if self.search.method == "grid" and (self.search.space or self.search.objectives != [keys.OBJECTIVE]):
            raise ValueError("search.space/search.objectives are for search.method=optuna")
        if self.search.method == "grid" and self.search.max_epochs_total is not None:
            raise ValueError("search.max_epochs_total is for search.method=optuna (a grid's cost is its size)")
        if self.search.method == "grid" and self.search.warm_start:
            raise ValueError("search.warm_start is for search.method=optuna (a grid runs every point anyway)")
        if self.search.method == "optuna":
            if not self.search.space:
                raise ValueError("search.space: optuna needs at least one range")
            if len(self.search.seeds) != 1:
                raise ValueError("search.seeds: an optuna search takes exactly one seed")
            budget = self.search.max_epochs_total
            if budget is not None and budget < self.max_epochs:
                raise ValueError(f"search.max_epochs_total ({budget}) cannot pay for one trial of "
                                 f"{self.max_epochs} epochs")
            if len(set(self.search.warm_start)) != len(self.search.warm_start):
                raise ValueError("search.warm_start: a sweep is named twice")
            if len(self.search.objectives) > 1 and self.scheduler.kind == "asha":
                raise ValueError("scheduler.kind: asha needs a single objective, not search.objectives")
        if self.scheduler.kind == "fifo" and self.scheduler.max_t not in (None, self.trainer.epochs):
            # FIFO ignores max_t: every trial trains trainer.epochs, which the budget must reserve.
            raise ValueError(
                f"scheduler.max_t ({self.scheduler.max_t}) is ASHA's; FIFO trains every trial for "
                f"trainer.epochs ({self.trainer.epochs}): set trainer.epochs instead, or scheduler.kind: asha"
            )
        if self.scheduler.kind == "asha":
            every = self.trainer.eval.every
            # Rungs sit at grace_period * rf^k epochs; the objective is fresh only at eval epochs.
            if every == 0 or self.scheduler.grace_period % every:
                raise ValueError(
                    "scheduler.grace_period must be a multiple of trainer.eval.every (>0) so ASHA "
                    f"compares fresh objectives (got {self.scheduler.grace_period} and {every})"
                )
            if self.scheduler.reduction_factor != int(self.scheduler.reduction_factor):
                raise ValueError("scheduler.reduction_factor must be a whole number with ASHA")
        return self

    def _check_selection(self) -> None:
        """The objective must read data it is allowed to select by, and say which (objective.split)."""
        name, split = self.objective.name, self.objective.split
        val_size = self.trainer.data.val_size
        if name in GROUNDTRUTH_OBJECTIVES and (
            self.trainer.data.dataset != "gaussians" or not self.trainer.eval.enabled
        ):
            raise ValueError(
                f"objective.name: {name} reads {GROUNDTRUTH_OBJECTIVES[name]}, which only a known-density "
                "dataset reports (trainer.data.dataset: gaussians, trainer.eval.enabled: true)"
            )
        if split == "val":
            if name in ON_TEST_IMAGES:
                raise ValueError(
                    f"objective.name: {name} is measured on the test images ({GROUNDTRUTH_OBJECTIVES[name]}), "
                    "so selecting by it selects on test data; set objective.split: test to do that knowingly "
                    "(every trial is tagged and the analysis says so)"
                )
            if name in ACCURACY_OBJECTIVES and val_size == 0:
                raise ValueError(
                    f"objective.split: val reads {keys.VAL_ACC}, but trainer.data.val_size is 0 (no validation "
                    "split); keep one (e.g. trainer.data.val_size=0.1), or set objective.split: test to select "
                    "on the test set as the paper did (every trial is tagged and the analysis says so)"
                )
        else:
            if val_size > 0 and name not in ON_TEST_IMAGES:
                raise ValueError(
                    f"objective.split: test selects on the test set although trainer.data.val_size={val_size} "
                    "gives a validation split; use objective.split: val (test is for presets that train on the "
                    "whole training set, trainer.data.val_size: 0, as the paper did)"
                )
        if keys.VAL_ACC in self.search.objectives and (val_size == 0 or split == "test"):
            raise ValueError(
                f"search.objectives: {keys.VAL_ACC} needs a validation split (trainer.data.val_size > 0) "
                "and objective.split: val"
            )

    def _check_confirm(self) -> None:
        """The confirmation's sample seed must be fresh: no trial drew its samples with it."""
        seed = self.confirm.sample_seed
        if seed is not None and seed in self.search.seeds:
            raise ValueError(
                f"confirm.sample_seed: {seed} is a trainer seed of search.seeds, so the trials of that seed drew "
                "their GAN-test samples with it; confirmation needs fresh draws (leave it unset for a derived one)"
            )

    @property
    def confirm_sample_seed(self) -> int:
        """The seed of the confirmation's samples (confirm.sample_seed, or one derived from the trial seeds)."""
        if self.confirm.sample_seed is not None:
            return self.confirm.sample_seed
        return CONFIRM_SEED_OFFSET + max(self.search.seeds)

    def confirm_train_seeds(self) -> list[int]:
        """The new training seeds of ``confirm.train_seeds``: the first N integers from
        RETRAIN_SEED_START up that are neither in ``search.seeds`` nor the confirmation's sample
        seed (a trial's own evaluation draws its samples with its training seed)."""
        taken = {*self.search.seeds, self.confirm_sample_seed}
        out: list[int] = []
        seed = RETRAIN_SEED_START
        while len(out) < self.confirm.train_seeds:
            if seed not in taken:
                out.append(seed)
            seed += 1
        return out

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def max_epochs(self) -> int:
        return self.scheduler.max_t or self.trainer.epochs


def judge_config(cfg: SweepConfig):
    """The judge's config (trainer.judge.JudgeConfig), its data defaulting to the trainer's."""
    from trainer.judge import JudgeConfig  # torch: only once a judge is configured

    data = copy.deepcopy(cfg.judge or {})
    data.setdefault("data", cfg.trainer.data.model_dump())
    return validate(JudgeConfig, data, prefix="judge")
