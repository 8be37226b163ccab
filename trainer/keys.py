"""Metric names, defined once: the trainer reports them, sweep logs them, analysis reads them.

Keys follow MLflow's rules (letters, digits, ``_ - . / space``), namespaced by stage.
"""

from enum import StrEnum


class Status(StrEnum):
    """A trial's state; a ``str``, so it is stored and compared as the plain word.

    The trainer reports RUNNING, FINISHED or DIVERGED with every epoch; the sweep adds STOPPED
    (its scheduler ended the trial early) and FAILED (the trial raised).
    """

    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    STOPPED = "stopped"
    FAILED = "failed"


EPOCH = "epoch"  # completed epochs (1-based)
STATUS = "status"  # a Status, reported with the metrics (a string, not logged as a metric)

# Training, averaged over the epoch's batches.
TRAIN_LOSS = "train/loss"  # total loss that was minimized
TRAIN_CE = "train/ce"
TRAIN_TRACE = "train/trace"  # mean h(x), the Hessian-trace estimate
TRAIN_GRAD_NORM = "train/grad_norm"  # mean ||grad_x f_y||^2
TRAIN_STABILITY = "train/stability"  # mean h(x)^2
TRAIN_ACC = "train/acc"  # fraction in [0, 1]
LR = "train/lr"
EPOCH_SECONDS = "time/epoch_s"  # wall seconds of the epoch's training steps
IMAGES_PER_SECOND = "time/images_per_s"

# Validation split (carved from the training set; absent when data.val_size is 0), clean
# images, eval mode. What selects (objective, early stopping, "best") reads these.
VAL_ACC = "val/acc"  # fraction in [0, 1]
VAL_LOSS = "val/loss"  # mean cross-entropy, nats

# Test set, clean images, eval mode. Reported for every run; never used to choose.
TEST_ACC = "test/acc"  # fraction in [0, 1]
TEST_LOSS = "test/loss"

# Evaluations (trainer.evaluation), at the configured cadence.
GAN_TEST = "eval/gan_test"  # fraction of samples the judge assigns to their target
EVAL_SECONDS = "time/eval_s"
SCORE_ALIGNMENT = "eval/score_alignment"  # known-density datasets only
FISHER_DIVERGENCE = "eval/fisher_divergence"
FISHER_DIVERGENCE_REL = "eval/fisher_divergence_rel"
# The relative Fisher divergence at eq. 4's minimiser in the exact isotropic family, for the run's
# (mu, sigma, D, noise_std): what score matching could reach (trainer.groundtruth).
FISHER_DIVERGENCE_REL_FLOOR = "eval/fisher_divergence_rel_floor"
SAMPLE_LOGLIK = "eval/sample_loglik"  # true log-density per dimension of the samples
# Its controls, same targets and start: the samples before any step (the initial distribution),
# and those a flat model (zero input gradient: only the prior moves them) would give. A model
# whose samples score no better than these has shown no alignment by this metric.
SAMPLE_LOGLIK_START = "eval/sample_loglik_start"
SAMPLE_LOGLIK_FLAT = "eval/sample_loglik_flat"

# Computed by sweep from the metrics above.
OBJECTIVE = "eval/objective"


# Curves: one metric per x value, the key = a prefix + the x value (read back by analysis).
DENSITY_RATIO_PREFIX = "eval/density_ratio/sigma_"
PIXEL_PERTURBATION_PREFIX = "eval/pixel_acc/frac_"


def density_ratio_key(sigma: float) -> str:
    """``eval/density_ratio/sigma_1e-03`` for sigma = 1e-3."""
    return f"{DENSITY_RATIO_PREFIX}{sigma:.0e}"


def pixel_perturbation_key(fraction: float) -> str:
    """``eval/pixel_acc/frac_0.0100`` for fraction = 0.01."""
    return f"{PIXEL_PERTURBATION_PREFIX}{fraction:.4f}"


# Intervals: a reported number's 95 % interval is logged beside it, at the same step, as
# ``<key>_lo`` and ``<key>_hi`` (trainer.stats computes them).
LO_SUFFIX = "_lo"
HI_SUFFIX = "_hi"


def lo_key(key: str) -> str:
    """``val/acc`` -> ``val/acc_lo``: the lower end of the metric's 95 % interval."""
    return key + LO_SUFFIX


def hi_key(key: str) -> str:
    """``val/acc`` -> ``val/acc_hi``: the upper end of the metric's 95 % interval."""
    return key + HI_SUFFIX


# Confirmation (sweep.confirm): a finalist re-scored on draws that selection never saw, logged in
# its own run with the intervals above. What a sweep reports as its result reads these.
CONFIRM_GAN_TEST = "confirm/gan_test"  # GAN-test on fresh samples from another sample seed
CONFIRM_TEST_ACC = "confirm/test_acc"  # test accuracy of the selected checkpoint
CONFIRM_OBJECTIVE = "confirm/objective"  # the objective from the confirmed parts
# With confirm.train_seeds: the finalist's confirmed numbers as the mean over its training seeds
# (its own and the retrains'), each with Student's t interval over those seeds (_lo/_hi).
CONFIRM_GAN_TEST_SEEDS = "confirm/gan_test_seeds"
CONFIRM_TEST_ACC_SEEDS = "confirm/test_acc_seeds"
CONFIRM_OBJECTIVE_SEEDS = "confirm/objective_seeds"
