"""Reading a sweep config: a preset or YAML file, dotted ``--set`` overrides, ``--name``.

Everything is validated here, before Ray starts or anything is written: the schema
(:mod:`sweep.config`), the judge's config and every grid point's trainer config; errors name the
offending key.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from sweep.config import SweepConfig, judge_config
from sweep.points import check_points
from trainer.config import ConfigError, parse_override, read_yaml, set_dotted, validate

PRESETS = Path(__file__).parent / "configs"  # shipped as package data


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


def _non_finite(value: Any, key: str) -> Iterator[tuple[str, float]]:
    """Every ``(dotted key, value)`` under ``value`` that is an infinite or NaN float."""
    if isinstance(value, float) and not math.isfinite(value):
        yield key, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _non_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _non_finite(v, f"{key}[{i}]")


def check_finite(data: Mapping[str, Any]) -> None:
    """Refuse ``inf``/``nan`` anywhere in the config (base, grid, space, points, judge): no setting
    of the sweep means an infinite number, and one would crash a trial or the names much later."""
    bad = list(_non_finite(data, ""))
    if bad:
        named = ", ".join(f"{key}={value}" for key, value in bad)
        raise ConfigError(f"{named}: not a finite number; every number of a sweep config must be finite")


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
    check_finite(data)  # before the schema, so the message names the number, not a bound it breaks
    cfg = validate(SweepConfig, data)
    check_finite(cfg.model_dump())  # strings the schema read as numbers ("inf" in YAML 1.1 lists)
    if cfg.judge is not None:
        judge_config(cfg)  # validate now; the judge is trained later
    check_points(cfg)
    return cfg
