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
negated (minus the mean squared distance to the true score, so larger is better), unbounded below
(worst -inf). The sample log-likelihood is no objective (sweep.config.NOT_SELECTABLE says why).

Every objective value has a 95 % interval (:func:`objective_interval`), logged beside it as
``eval/objective_lo``/``_hi``; selection still ranks by the value. It follows from the intervals
the trainer logs for the parts (Wilson for accuracy over the split's images and GAN-test over the
samples, mean intervals for ground-truth metrics): ``weighted`` and ``harmonic`` combine the two
independent parts by first-order propagation (:func:`trainer.stats.combine`: exact for the
weighted mean, the delta method for the harmonic mean), clipped to [0, 1]; the one-part
objectives take their part's interval (negated for ``fisher_divergence``); a diverged trial's
worst value has lo = hi = the value.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

from sweep.config import GROUNDTRUTH_OBJECTIVES, ObjectiveConfig
from trainer import keys
from trainer.stats import Interval, combine

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
_GROUNDTRUTH_SIGN = {"score_alignment": 1.0, "fisher_divergence": -1.0}
_GROUNDTRUTH_WORST = {"score_alignment": -1.0, "fisher_divergence": -math.inf}


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


def _part(metrics: Mapping[str, object], key: str) -> Interval | None:
    """The logged metric ``key`` with its interval, None when it or its interval is missing."""
    found = [metrics.get(k) for k in (key, keys.lo_key(key), keys.hi_key(key))]
    return None if any(v is None for v in found) else Interval(*(float(v) for v in found))


def objective_interval(cfg: ObjectiveConfig, metrics: Mapping[str, object]) -> Interval | None:
    """The objective with its 95 % interval from the parts' logged intervals (module docstring);
    None when there is no objective yet or a part's interval was not logged."""
    value = objective_value(cfg, metrics)
    if value is None:
        return None
    if metrics.get(keys.STATUS) == keys.Status.DIVERGED:
        return Interval(value, value, value)
    if cfg.name in GROUNDTRUTH_OBJECTIVES:
        part = _part(metrics, GROUNDTRUTH_OBJECTIVES[cfg.name])
        if part is None:
            return None
        ends = sorted(_GROUNDTRUTH_SIGN[cfg.name] * v for v in (part.lo, part.hi))
        return Interval(value, *ends)
    needed = {"accuracy": [accuracy_key(cfg)], "gan_test": [keys.GAN_TEST]}.get(
        cfg.name, [accuracy_key(cfg), keys.GAN_TEST]
    )
    parts = [_part(metrics, key) for key in needed]
    if any(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    interval = combine(lambda acc, gan: OBJECTIVES[cfg.name](acc, gan, cfg.weight), parts, bounds=(0.0, 1.0))
    return Interval(value, interval.lo, interval.hi)
