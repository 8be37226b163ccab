"""The combined objective: one number per trial from test accuracy and GAN-test.

Every objective maps two fractions in [0, 1] to [0, 1] and is maximized, so the worst value
(given to diverged trials and to epochs before the first evaluation) is 0.
"""

from __future__ import annotations

from typing import Callable, Mapping

from sweep.config import ObjectiveConfig
from trainer import keys

WORST = 0.0  # every objective is in [0, 1] and maximized


def _weighted(acc: float, gan: float, weight: float) -> float:
    return weight * acc + (1 - weight) * gan


def _harmonic(acc: float, gan: float, weight: float) -> float:
    # F1-style: high only when both are high; 0 when either is 0.
    return 2 * acc * gan / (acc + gan) if acc + gan > 0 else 0.0


OBJECTIVES: dict[str, Callable[[float, float, float], float]] = {
    "weighted": _weighted,
    "harmonic": _harmonic,
    "accuracy": lambda acc, gan, weight: acc,
    "gan_test": lambda acc, gan, weight: gan,
}


def objective_value(cfg: ObjectiveConfig, metrics: Mapping[str, object]) -> float | None:
    """The objective for an epoch's metrics, or None when they hold no evaluation yet."""
    if metrics.get(keys.STATUS) == keys.Status.DIVERGED:
        return WORST
    acc = metrics.get(keys.TEST_ACC)
    gan = metrics.get(keys.GAN_TEST)
    if acc is None or (cfg.name != "accuracy" and gan is None):
        return None
    return float(OBJECTIVES[cfg.name](float(acc), float(gan or 0.0), cfg.weight))
