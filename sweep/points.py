"""The points of a sweep: one trial's dotted overrides and seed, its name, the grid's expansion."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.config import SearchConfig, SweepConfig
from sweep.record import LOSS_NAMES, ViewTag
from trainer.config import ConfigError, TrainConfig, set_dotted, validate

# A grid trial's Tune config: the point's key (its identity; names are for display only).
POINT_KEY = "point_key"
# A replicate's Tune config (search.replicate) carries its training seed under this key, beside
# the grid point's key or the sampled values: the same settings with another seed, its own key.
POINT_SEED = "point_seed"
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


MAX_DIGITS = 17  # significant digits that tell any two distinct floats apart (IEEE 754 double)
OPTUNA_DIGITS = 3  # a sampled point's name: 3 significant digits (its run's params hold the exact values)


def _fmt(value: Any, digits: int = 1) -> str:
    """Floats in ``digits`` significant digits with a bare exponent (``1e-4``, ``1.2e-3``, ``1e12``):
    names stay short enough for the MLflow runs table's default column."""
    if not isinstance(value, float):
        return str(value)
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.{max(0, digits - 1)}e}".split("e")
    if "." in mantissa:  # 1.20e-3 -> 1.2e-3: trailing zeros add no information
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def format_weight(value: Any, digits: int = OPTUNA_DIGITS) -> str:
    """A loss weight as names show it, in ``digits`` significant digits: ``1e-3``, ``3.16e-4``."""
    return _fmt(value, digits)


def weight_tags(cfg: TrainConfig) -> dict[str, str]:
    """The runs table's λ and μ of a trial (:class:`sweep.record.ViewTag`) in 3 significant digits,
    ``-`` where its loss has no such weight (the baseline's config still holds the base's values)."""
    used = KIND_WEIGHTS[cfg.loss.kind]
    return {str(tag): format_weight(getattr(cfg.loss, name)) if name in used else "-"
            for name, tag in (("lam", ViewTag.LAM), ("mu", ViewTag.MU))}


def point_name(cfg: TrainConfig, point: Point, digits: int = 1) -> str:
    """A display name: ``sm λ1e-5 μ1e-3 s0`` (loss kind, its weights, other varied keys, seed),
    floats in ``digits`` significant digits. Never an identity: that is :attr:`Point.key`."""
    parts = [LOSS_NAMES[cfg.loss.kind].abbrev]
    shown = {f"loss.{w}" for w in KIND_WEIGHTS[cfg.loss.kind]}
    for key in sorted(shown):
        parts.append(f"{SYMBOLS[key]}{_fmt(getattr(cfg.loss, key.split('.')[1]), digits)}")
    for key, value in point.overrides:
        if key not in shown and key not in ("loss.preset", "loss.kind", "loss.lam", "loss.mu"):
            shown_value = _fmt(value, digits)
            parts.append(f"{SYMBOLS[key]}{shown_value}" if key in SYMBOLS else f"{key}={shown_value}")
    parts.append(f"s{point.seed}")
    return " ".join(parts)


def point_names(base: Mapping[str, Any], points: list[Point]) -> dict[str, str]:
    """Display names by point key, unique within ``points``.

    Each point keeps the short (one-digit) name unless another point of the sweep prints alike;
    the points that collide get more significant digits until they differ (``λ1.2e-3`` beside
    ``λ1e-3``). Points that differ in no shown value (e.g. an unshown key) get their key appended.
    """
    configs = {p.key: apply_point(base, p) for p in points}
    names: dict[str, str] = {}
    pending = list(points)
    for digits in range(1, MAX_DIGITS + 1):
        by_name: dict[str, list[Point]] = {}
        for p in pending:
            by_name.setdefault(point_name(configs[p.key], p, digits), []).append(p)
        pending = []
        for name, group in by_name.items():
            if len(group) == 1 and name not in names.values():
                names[group[0].key] = name
            else:
                pending += group
        if not pending:
            return names
    for p in pending:  # alike in every shown value: the key tells them apart
        names[p.key] = f"{point_name(configs[p.key], p, MAX_DIGITS)} #{p.key[:6]}"
    return names


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
    explicit = {tuple(p.items()): i for i, p in enumerate(cfg.search.points)}  # an error names where it was typed
    for point in grid_points(cfg.search):
        i = explicit.get(point.overrides)
        _check_point(base, point, "search.grid" if i is None else f"search.points[{i}]")
    if cfg.search.method == "optuna":
        for key, rng in cfg.search.space.items():
            for value in (rng.low, rng.high):
                _check_point(base, Point(((key, value),), cfg.search.seeds[0]), "search.space")
    elif not grid_points(cfg.search):
        raise ConfigError("search: the grid has no points (give search.grid or search.points)")


def _check_point(base: Mapping[str, Any], point: Point, where: str) -> None:
    """:func:`apply_point`, its ConfigError naming each key as the user typed it: ``search.grid.loss.lamda``
    for the trainer's ``trainer.loss.lamda`` (``where``: the section the point's keys come from)."""
    try:
        apply_point(base, point)
    except ConfigError as e:
        message = str(e)
        named = False
        for key, _ in point.overrides:
            # The key as a whole path (loss.lam is not loss.lamda), or a path inside it.
            message, count = re.subn(re.escape(f"trainer.{key}") + r"(?=[.:;\s\[]|$)", f"{where}.{key}", message)
            named = named or count > 0
        if not named:  # a check across keys: say which point it was
            message = f"{where} point {dict(point.overrides)}: {message}"
        raise ConfigError(message) from None
