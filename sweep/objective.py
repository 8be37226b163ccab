"""The objective: one number per trial, maximized, from validation accuracy and GAN-test (or one
ground-truth metric). It is what selects: ASHA, Optuna and best.pt all rank by it.

Accuracy is read from the split that ``objective.split`` names: ``val/acc`` (the validation split
carved from the training set; the default) or ``test/acc`` (only for presets that train on the
whole training set as the paper did; every trial is then tagged ``trial.selection_split=test``).
GAN-test scores generated samples with the judge: their targets are the test labels in order, class
indices only, and no test image is seen, so it is not a selection on test data.

The accuracy/GAN-test objectives map two fractions in [0, 1] to [0, 1], so their worst value (given
to diverged trials and to epochs before the first evaluation) is 0. The ground-truth objectives have
their own ranges: ``score_alignment`` is a cosine in [-1, 1] (worst -1); ``fisher_divergence`` is
negated (minus the mean squared distance to the true score, so larger is better) and
``sample_loglik`` is in nats per dimension, both unbounded below (worst -inf).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

from sweep.config import GROUNDTRUTH_OBJECTIVES, ObjectiveConfig
from trainer import keys

WORST = 0.0  # the worst value of the accuracy/GAN-test objectives, all in [0, 1]


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
# Ground-truth objectives: sign that makes larger better, and the worst value.
_GROUNDTRUTH_SIGN = {"score_alignment": 1.0, "fisher_divergence": -1.0, "sample_loglik": 1.0}
_GROUNDTRUTH_WORST = {"score_alignment": -1.0, "fisher_divergence": -math.inf, "sample_loglik": -math.inf}


def accuracy_key(cfg: ObjectiveConfig) -> str:
    """The accuracy metric the objective reads: ``val/acc``, or ``test/acc`` with ``split: test``."""
    return keys.TEST_ACC if cfg.split == "test" else keys.VAL_ACC


def worst_value(cfg: ObjectiveConfig) -> float:
    """The objective of a diverged trial, and before the first evaluation."""
    return _GROUNDTRUTH_WORST.get(cfg.name, WORST)


def objective_value(cfg: ObjectiveConfig, metrics: Mapping[str, object]) -> float | None:
    """The objective for an epoch's metrics, or None when they hold no evaluation yet."""
    if metrics.get(keys.STATUS) == keys.Status.DIVERGED:
        return worst_value(cfg)
    if cfg.name in GROUNDTRUTH_OBJECTIVES:
        value = metrics.get(GROUNDTRUTH_OBJECTIVES[cfg.name])
        return None if value is None else _GROUNDTRUTH_SIGN[cfg.name] * float(value)
    acc = metrics.get(accuracy_key(cfg))
    gan = metrics.get(keys.GAN_TEST)
    if (cfg.name != "gan_test" and acc is None) or (cfg.name != "accuracy" and gan is None):
        return None
    return float(OBJECTIVES[cfg.name](float(acc or 0.0), float(gan or 0.0), cfg.weight))
