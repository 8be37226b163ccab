"""The points of a sweep: one trial's dotted overrides and seed, its name, the grid's expansion."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.config import SearchConfig, SweepConfig
from sweep.record import LOSS_NAMES
from trainer.config import ConfigError, TrainConfig, set_dotted, validate

# Which loss weights a kind uses, so names show only what matters.
KIND_WEIGHTS = {"ce": (), "score_matching": ("lam", "mu"), "anti_score_matching": ("lam",), "grad_norm": ("lam",)}
SYMBOLS = {"loss.lam": "λ", "loss.mu": "μ", "loss.sigma": "σ", "loss.tau": "τ"}


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
    """Floats in one significant digit with a bare exponent (``1e-4``, ``1e12``): names stay short
    enough for the MLflow runs table's default column."""
    if not isinstance(value, float):
        return str(value)
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def point_name(cfg: TrainConfig, point: Point) -> str:
    """A display name: ``sm λ1e-5 μ1e-3 s0`` (loss kind, its weights, other varied keys, seed)."""
    parts = [LOSS_NAMES[cfg.loss.kind].abbrev]
    shown = {f"loss.{w}" for w in KIND_WEIGHTS[cfg.loss.kind]}
    for key in sorted(shown):
        parts.append(f"{SYMBOLS[key]}{_fmt(getattr(cfg.loss, key.split('.')[1]))}")
    for key, value in point.overrides:
        if key not in shown and key not in ("loss.preset", "loss.kind", "loss.lam", "loss.mu"):
            parts.append(f"{SYMBOLS[key]}{_fmt(value)}" if key in SYMBOLS else f"{key}={_fmt(value)}")
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


def grid_size(search: SearchConfig) -> int:
    """How many points the grid expands to at most (before dropping duplicates), without expanding it."""
    axes = math.prod(len(v) for v in search.grid.values()) if search.grid else 0
    return (axes + len(search.points)) * len(search.seeds)


def check_points(cfg: SweepConfig) -> None:
    """Validate every grid point's trainer config now, so a bad value fails before Ray starts."""
    size = grid_size(cfg.search)
    if size > cfg.search.max_points:
        raise ConfigError(
            f"search.grid: {size:,} points (axes x points x seeds) exceed search.max_points "
            f"({cfg.search.max_points:,}); shrink the grid or raise the limit, e.g. "
            f"--set search.max_points={size}"
        )
    base = cfg.trainer.model_dump()
    for point in grid_points(cfg.search):
        apply_point(base, point)
    if cfg.search.method == "optuna":
        for key, rng in cfg.search.space.items():
            for value in (rng.low, rng.high):
                apply_point(base, Point(((key, value),), cfg.search.seeds[0]))
    elif not grid_points(cfg.search):
        raise ConfigError("search: the grid has no points (give search.grid or search.points)")
