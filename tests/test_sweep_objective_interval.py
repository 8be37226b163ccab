"""The objective's 95 % interval from its parts' logged intervals (sweep.objective), by hand."""

from __future__ import annotations

import math

import pytest

from sweep.config import ObjectiveConfig
from sweep.objective import objective_interval, objective_value
from trainer import keys
from trainer.keys import hi_key, lo_key

# val/acc 0.8 [0.76, 0.84] and GAN-test 0.6 [0.52, 0.68]: half-widths 0.04 and 0.08.
METRICS = {
    keys.STATUS: "running",
    keys.VAL_ACC: 0.8, lo_key(keys.VAL_ACC): 0.76, hi_key(keys.VAL_ACC): 0.84,
    keys.GAN_TEST: 0.6, lo_key(keys.GAN_TEST): 0.52, hi_key(keys.GAN_TEST): 0.68,
    keys.TEST_ACC: 0.7, lo_key(keys.TEST_ACC): 0.65, hi_key(keys.TEST_ACC): 0.75,
}  # fmt: skip


def test_weighted_objective_adds_the_parts_variances_with_the_weights_squared():
    iv = objective_interval(ObjectiveConfig(name="weighted", weight=0.5), METRICS)
    # Var = 0.5²·se_acc² + 0.5²·se_gan², se = half-width / z: half = 0.5·√(0.04² + 0.08²).
    assert iv.value == pytest.approx(0.7) == objective_value(ObjectiveConfig(), METRICS)
    assert iv.half_width == pytest.approx(0.5 * math.hypot(0.04, 0.08), rel=1e-6)
    weighted = objective_interval(ObjectiveConfig(name="weighted", weight=0.25), METRICS)
    assert weighted.half_width == pytest.approx(math.hypot(0.25 * 0.04, 0.75 * 0.08), rel=1e-6)


def test_harmonic_objective_by_the_delta_method():
    iv = objective_interval(ObjectiveConfig(name="harmonic"), METRICS)
    # H = 2ag/(a+g); ∂H/∂a = 2g²/(a+g)² = 0.72/1.96, ∂H/∂g = 2a²/(a+g)² = 1.28/1.96.
    assert iv.value == pytest.approx(2 * 0.8 * 0.6 / 1.4)
    assert iv.half_width == pytest.approx(math.hypot(0.72 / 1.96 * 0.04, 1.28 / 1.96 * 0.08), rel=1e-6)
    assert iv.lo < iv.value < iv.hi


def test_one_part_objectives_take_their_parts_interval_from_the_selection_split():
    acc = objective_interval(ObjectiveConfig(name="accuracy"), METRICS)
    assert (acc.value, acc.lo, acc.hi) == (0.8, 0.76, 0.84)
    test = objective_interval(ObjectiveConfig(name="accuracy", split="test"), METRICS)
    assert (test.value, test.lo, test.hi) == (0.7, 0.65, 0.75)
    gan = objective_interval(ObjectiveConfig(name="gan_test"), METRICS)
    assert (gan.value, gan.lo, gan.hi) == (0.6, 0.52, 0.68)


def test_groundtruth_objectives_take_the_metrics_interval_negated_where_the_metric_is():
    metrics = {keys.STATUS: "running", keys.FISHER_DIVERGENCE: 12.5, lo_key(keys.FISHER_DIVERGENCE): 11.0,
               hi_key(keys.FISHER_DIVERGENCE): 14.0, keys.SCORE_ALIGNMENT: 0.3,
               lo_key(keys.SCORE_ALIGNMENT): 0.25, hi_key(keys.SCORE_ALIGNMENT): 0.35}  # fmt: skip
    fisher = objective_interval(ObjectiveConfig(name="fisher_divergence", split="test"), metrics)
    assert (fisher.value, fisher.lo, fisher.hi) == (-12.5, -14.0, -11.0)
    align = objective_interval(ObjectiveConfig(name="score_alignment", split="test"), metrics)
    assert (align.value, align.lo, align.hi) == (0.3, 0.25, 0.35)


def test_diverged_is_its_worst_value_exactly_and_missing_parts_give_none():
    iv = objective_interval(ObjectiveConfig(), {keys.STATUS: keys.Status.DIVERGED})
    assert (iv.value, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    assert objective_interval(ObjectiveConfig(), {keys.STATUS: "running"}) is None  # no evaluation yet
    without = {k: v for k, v in METRICS.items() if k != hi_key(keys.GAN_TEST)}
    assert objective_interval(ObjectiveConfig(), without) is None


def test_the_interval_is_clipped_to_the_objectives_range():
    metrics = {keys.STATUS: "running", keys.VAL_ACC: 1.0, lo_key(keys.VAL_ACC): 0.9, hi_key(keys.VAL_ACC): 1.0,
               keys.GAN_TEST: 1.0, lo_key(keys.GAN_TEST): 0.8, hi_key(keys.GAN_TEST): 1.0}  # fmt: skip
    iv = objective_interval(ObjectiveConfig(), metrics)
    assert iv.value == 1.0 and iv.hi == 1.0 and 0.8 < iv.lo < 1.0
