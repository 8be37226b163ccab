"""The sweep's one validated config: what to train, which points to try, where results go.

A sweep config is YAML (a preset in ``sweep/configs/`` or a file) plus dotted ``key=value``
overrides from the command line. It embeds a full :class:`trainer.config.TrainConfig` (the base
every trial starts from) and describes the points as dotted overrides of that base
(``loss.lam``, ``loss.mu``, ...). Everything is validated at load time, before Ray starts or
anything is written, and errors name the offending key.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer.config import (
    ConfigError,
    TrainConfig,
    parse_override,
    read_yaml,
    set_dotted,
    validate,
)

PRESETS = Path(__file__).parent / "configs"  # shipped as package data

# Environment variables a cluster sets so every sweep lands in shared places.
ENV_STORAGE = "SWEEP_STORAGE_PATH"  # Ray results (and the Optuna study): an s3:// or NFS path
ENV_TRACKING = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the tracking server

# Short names of the loss kinds in trial names ("sm λ=1e-05 μ=1e-03 s0").
KIND_ABBREV = {"ce": "base", "score_matching": "sm", "anti_score_matching": "asm", "grad_norm": "gn"}
# Which loss weights a kind uses, so names show only what matters.
KIND_WEIGHTS = {"ce": (), "score_matching": ("lam", "mu"), "anti_score_matching": ("lam",), "grad_norm": ("lam",)}
SYMBOLS = {"loss.lam": "λ", "loss.mu": "μ", "loss.sigma": "σ", "loss.tau": "τ"}


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
    objectives: list[str] = ["eval/objective"]  # one metric, or several for a multi-objective front
    sampler_seed: int = 0  # seed of Optuna's sampler
    seed_with_grid: bool = True  # evaluate the grid's points first (Optuna's points_to_evaluate)
    storage: str | None = None  # Optuna RDB URL; None: sqlite beside the Ray results

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
        from trainer import keys

        allowed = {keys.OBJECTIVE, keys.TEST_ACC, keys.GAN_TEST}
        bad = [m for m in v if m not in allowed]
        if bad or not v or len(set(v)) != len(v):
            raise ValueError(f"must be distinct metrics from {sorted(allowed)}, not {v}")
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
    gpus: float = Field(0.0, ge=0)


class ObjectiveConfig(_Strict):
    """The combined objective reported as ``eval/objective`` (maximized, in [0, 1])."""

    name: Literal["weighted", "harmonic", "accuracy", "gan_test"] = "weighted"
    weight: float = Field(0.5, ge=0, le=1)  # weighted: weight of test accuracy (GAN-test gets 1-w)


class TrackingConfig(_Strict):
    """Where MLflow runs go (the env var MLFLOW_TRACKING_URI overrides ``uri``)."""

    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths resolve against the working directory
    artifacts: str = "./mlruns"  # artifact root for experiments this sweep creates (local stores)


class FailureConfig(_Strict):
    max_failures: int = Field(2, ge=-1)  # retries per trial from its last checkpoint; -1: forever


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
    analysis: bool = True  # write Table 2 / Pareto to the parent run at the end

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError(f"must be a non-empty name without '/', '\\' or spaces, not {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        needs_gan = self.objective.name in ("weighted", "harmonic", "gan_test") or (
            "eval/gan_test" in self.search.objectives
        )
        if needs_gan and (self.judge is None or not self.trainer.eval.enabled):
            raise ValueError(
                f"objective.name: {self.objective.name!r} needs GAN-test, but the judge is off "
                "(judge: null or trainer.eval.enabled: false); use objective.name=accuracy"
            )
        if self.search.method == "grid" and (self.search.space or self.search.objectives != ["eval/objective"]):
            raise ValueError("search.space/search.objectives are for search.method=optuna")
        if self.search.method == "optuna":
            if not self.search.space:
                raise ValueError("search.space: optuna needs at least one range")
            if len(self.search.seeds) != 1:
                raise ValueError("search.seeds: an optuna search takes exactly one seed")
            if len(self.search.objectives) > 1 and self.scheduler.kind == "asha":
                raise ValueError("scheduler.kind: asha needs a single objective, not search.objectives")
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

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def max_epochs(self) -> int:
        return self.scheduler.max_t or self.trainer.epochs


# --------------------------------------------------------------------------- points


@dataclass(frozen=True)
class Point:
    """One trial's settings: dotted overrides of the base trainer config, and a seed."""

    overrides: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def key(self) -> str:
        """A stable identity of the point within a sweep (MLflow tag ``trial.key``)."""
        blob = json.dumps([sorted(self.overrides), self.seed], sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def apply_point(base: Mapping[str, Any], point: Point) -> TrainConfig:
    """The trainer config of one trial: the base with the point's overrides and seed."""
    data = copy.deepcopy(dict(base))
    items = dict(point.overrides)
    if "loss.preset" in items:  # a preset replaces the base loss, then explicit keys apply
        data["loss"] = {"preset": items.pop("loss.preset")}
    for key, value in items.items():
        set_dotted(data, key, value)
    data["seed"] = point.seed
    return validate(TrainConfig, data, prefix="trainer")


def _fmt(value: Any) -> str:
    return f"{value:.0e}" if isinstance(value, float) else str(value)


def point_name(cfg: TrainConfig, point: Point) -> str:
    """A display name: ``sm λ=1e-05 μ=1e-03 s0`` (loss kind, its weights, other varied keys, seed)."""
    parts = [KIND_ABBREV[cfg.loss.kind]]
    shown = {f"loss.{w}" for w in KIND_WEIGHTS[cfg.loss.kind]}
    for key in sorted(shown):
        parts.append(f"{SYMBOLS[key]}={_fmt(getattr(cfg.loss, key.split('.')[1]))}")
    for key, value in point.overrides:
        if key not in shown and key not in ("loss.preset", "loss.kind", "loss.lam", "loss.mu"):
            parts.append(f"{SYMBOLS.get(key, key)}={_fmt(value)}")
    parts.append(f"s{point.seed}")
    return " ".join(parts)


def grid_points(search: SearchConfig) -> list[Point]:
    """Grid × seeds, then the explicit points × seeds, without duplicates, in a stable order."""
    axes = list(search.grid.items())
    combos = [tuple(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]
    if not axes:
        combos = []
    combos += [tuple(p.items()) for p in search.points]
    out: list[Point] = []
    seen: set[str] = set()
    for combo in combos:
        for seed in search.seeds:
            point = Point(tuple(combo), seed)
            if point.key not in seen:
                seen.add(point.key)
                out.append(point)
    return out


def check_points(cfg: SweepConfig) -> None:
    """Validate every grid point's trainer config now, so a bad value fails before Ray starts."""
    base = cfg.trainer.model_dump()
    for point in grid_points(cfg.search):
        apply_point(base, point)
    if cfg.search.method == "optuna":
        for key, rng in cfg.search.space.items():
            for value in (rng.low, rng.high):
                apply_point(base, Point(((key, value),), cfg.search.seeds[0]))
    elif not grid_points(cfg.search):
        raise ConfigError("search: the grid has no points (give search.grid or search.points)")


# --------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    """Names of the presets shipped in sweep/configs/."""
    return sorted(p.name.removesuffix(".yaml") for p in PRESETS.iterdir() if p.name.endswith(".yaml"))


def resolve_source(source: str | None) -> Path:
    """A preset name or a YAML path -> the file to read."""
    source = source or "quickstart"
    if source in preset_names():
        return PRESETS / f"{source}.yaml"
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    raise ConfigError(f"--config {source!r} is neither a file nor a preset; presets: {', '.join(preset_names())}")


# Sections keyed by dotted trainer keys: ``--set search.grid.loss.lam=[1e-3]`` sets the axis
# "loss.lam", it does not descend into "loss".
DOTTED_SECTIONS = ("search.grid", "search.space")


def _get(data: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return dict(node) if isinstance(node, Mapping) else {}


def load_sweep_config(
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    name: str | None = None,
) -> SweepConfig:
    """Read a preset/file/dict, apply ``key=value`` overrides and ``--name``, validate everything."""
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        path = resolve_source(str(source) if source is not None else None)
        data = read_yaml(path)
        if "name" not in data and path.stem in preset_names():
            data["name"] = path.stem
    for item in overrides:
        key, value = parse_override(item)
        for section in DOTTED_SECTIONS:  # their own keys are dotted trainer keys: one level only
            if key.startswith(section + "."):
                set_dotted(data, section, {**_get(data, section), key[len(section) + 1 :]: value})
                break
        else:
            set_dotted(data, key, value)
    if name is not None:
        data["name"] = name
    cfg = validate(SweepConfig, data)
    if cfg.judge is not None:
        judge_config(cfg)  # validate now; the judge is trained later
    check_points(cfg)
    return cfg


def judge_config(cfg: SweepConfig):
    """The judge's config (trainer.judge.JudgeConfig), its data defaulting to the trainer's."""
    from trainer.judge import JudgeConfig

    data = copy.deepcopy(cfg.judge or {})
    data.setdefault("data", cfg.trainer.data.model_dump())
    return validate(JudgeConfig, data, prefix="judge")


def resolve_tracking_uri(cfg: SweepConfig, cwd: Path | None = None) -> str:
    """The tracking URI every process uses: env first, relative sqlite paths made absolute."""
    uri = os.environ.get(ENV_TRACKING) or cfg.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((cwd or Path.cwd()) / uri[len(prefix):])
    elif "://" not in uri:  # a bare path is a file store; make it absolute too
        uri = str((cwd or Path.cwd()) / uri)
    return uri


def resolve_artifact_root(cfg: SweepConfig, cwd: Path | None = None) -> str:
    """Artifact root for new experiments on a local store, as an absolute URI."""
    root = cfg.tracking.artifacts
    if "://" in root:
        return root
    return ((cwd or Path.cwd()) / root).resolve().as_uri()


def resolve_storage_path(cfg: SweepConfig, cwd: Path | None = None) -> str:
    """Ray's storage path: env SWEEP_STORAGE_PATH first, local paths made absolute."""
    path = os.environ.get(ENV_STORAGE) or cfg.storage_path
    if "://" in path:
        return path
    return str(((cwd or Path.cwd()) / path).resolve())
