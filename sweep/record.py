"""One trial record: every name a trial is stored under in MLflow, and its typed model.

A trial crosses three places: Tune (which runs it), MLflow (where it is kept) and the analysis
(which reads it back). The names it is kept under are defined here once: the statuses (from
:mod:`trainer.keys`, since the trainer reports them), the MLflow tags and artifact paths, the
display names of the loss kinds. :mod:`sweep.tracking` is the only module that writes them;
:func:`analysis.runs.load` reads them back into a frame validated against :class:`TrialRecord`.

This module imports neither Ray nor MLflow, so the analysis can use it without the sweep's
driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from trainer.keys import Status

__all__ = ["Status", "Tag", "ViewTag", "Role", "SelectionSplit", "TrialRecord", "LossNames", "LOSS_NAMES",
           "JUDGES_EXPERIMENT", "items_tag", "final_status"]


class Tag(StrEnum):
    """MLflow tag names of the sweep's runs (values are strings)."""

    PARENT = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under the sweep's
    RUN_NAME = "mlflow.runName"  # MLflow's own: the run's name
    SWEEP = "sweep.name"  # the sweep's name, on the parent and every trial
    ROLE = "sweep.role"  # a Role
    COMMIT = "git.commit"  # the checkout the run came from
    TRIALS = "sweep.trials"  # parent: trials Tune reported at the end
    FAILED_TRIALS = "sweep.failed_trials"  # parent: of which FAILED
    BEST_POINT = "sweep.best_point"  # parent: the point with the highest final eval/objective
    BEST_RUN = "sweep.best_run"  # parent: that point's run id
    INTERRUPTED = "sweep.interrupted"  # parent: "true" while a Ctrl-C'd sweep awaits --resume
    NOTE = "mlflow.note.content"  # MLflow's own: the run's description (Markdown)
    KEY = "trial.key"  # the point's stable identity (sweep.points.Point.key)
    POINT = "trial.point"  # the point's display name, also the run name
    TRIAL_ID = "trial.id"  # Tune's trial id of the latest attempt
    STATUS = "trial.status"  # a Status
    ATTEMPTS = "trial.attempts"  # starts of this trial (1 + retries and resumes)
    RESTARTED = "trial.restarted"  # why the trial started again from scratch (its run replaced)
    CHECKPOINT = "trial.checkpoint"  # artifact path of the checkpoint to use: best, else last
    BEST_OBJECTIVE = "trial.best_objective"  # the best eval/objective so far
    JUDGE = "trial.judge"  # run id of the GAN-test judge the trial used
    # The split the objective (hence ASHA, Optuna, best.pt) was computed on: a SelectionSplit.
    SELECTION_SPLIT = "trial.selection_split"
    JUDGE_KEY = "judge.key"  # judges experiment and trials: what the judge was trained with
    JUDGE_ARCH = "judge.arch"  # trials: the judge's architecture (vgg11_released, vgg11)
    JUDGE_SHA256 = "judge.sha256"  # judges experiment: sha256 of judge.pt, checked before it is used
    WARM_START = "sweep.warm_start"  # parent: comma-separated run ids the search started from
    # A finalist's run: what its confirm/* metrics were measured on (sweep.confirm).
    CONFIRM_SAMPLE_SEED = "confirm.sample_seed"  # seed of the fresh samples' starting noise
    CONFIRM_SAMPLES = "confirm.samples"  # samples confirm/gan_test is a fraction of
    CONFIRM_TEST_IMAGES = "confirm.test_images"  # test images confirm/test_acc is a fraction of
    CONFIRM_TRAIN_SEEDS = "confirm.train_seeds"  # the new training seeds confirm/*_seeds are the mean over
    # The objective's definition (JSON: name, weight, split), so a reader can recompute it from its
    # parts: a paired difference of two runs' objectives needs it (trainer.compare.paired).
    OBJECTIVE = "trial.objective"
    # Per-item outcomes (trainer.items) of the latest evaluation, tag items_tag(metric key) each;
    # ITEMS_EPOCH: the epoch they are of. A finalist's confirmation adds those of confirm/*.
    ITEMS_EPOCH = "items.epoch"
    # Parent: the pooled run-to-run variance of each metric over points with >= 2 seeds
    # (trainer.pooled), as metrics pooled/<column>_sd and pooled/<column>_df.


def items_tag(metric: str) -> str:
    """The tag holding a run's per-item outcomes of ``metric`` (a metric key): ``items.val/acc``."""
    return f"items.{metric}"


RETRAIN_TRIAL_PREFIX = "confirm-"  # tag trial.id of a finalist's retrain (sweep.confirm): no Tune trial
POOLED_PREFIX = "pooled/"  # parent metrics pooled/<frame column>_sd, pooled/<frame column>_df


class ViewTag(StrEnum):
    """Tags written for the MLflow runs table to show (its shared view's columns): text, so that a
    number reads as ``0.803 [0.759, 0.846]`` (three decimals, its 95 % interval) where a metric
    column would show ``0.802517361…`` or ``0.6328125``. The metrics stay what the analysis reads."""

    OBJECTIVE = "objective"  # trial: the latest eval/objective (what selected) with its interval
    CONFIRMED = "confirmed objective"  # finalist: confirm/objective (the mean over seeds when retrained)
    VAL_ACC = "val acc"  # trial: the latest val/acc with its interval
    GAN_TEST = "GAN-test"  # trial: the latest eval/gan_test with its interval
    TEST_ACC = "test acc"  # trial: the latest test/acc with its interval
    LAM = "λ"  # trial: loss.lam in 3 significant digits, "-" where the loss has no λ (the baseline)
    MU = "μ"  # trial: loss.mu likewise


ENDED = (Status.FINISHED, Status.DIVERGED)  # what a trial's own last report can end it as


def final_status(last: str | None, errored: bool = False) -> Status:
    """A trial's final status, the one rule: it raised (for good) -> failed; its last report said
    finished or diverged -> that; anything else (a scheduler stopped it before its last epoch, or it
    never reported) -> stopped. Tune's rows, the trial's own run and the progress lines all use it."""
    if errored:
        return Status.FAILED
    return Status(last) if last in ENDED else Status.STOPPED


class SelectionSplit(StrEnum):
    """Value of the tag ``trial.selection_split``: the data a sweep chose by.

    VAL: a validation split carved from the training set (the default). TEST: the run trained
    on the whole training set (``trainer.data.val_size: 0``, as the paper did) or selected on a
    metric measured on test images, so its "best" and its test numbers are optimistically biased.
    """

    VAL = "val"
    TEST = "test"


# Parent-run metrics: the sweep's summary (the best point's final values, trials per status).
# best/objective, best/test_acc and best/gan_test are the confirmed numbers when the best point was
# confirmed (sweep.confirm; with best/<name>_lo and best/<name>_hi), else what selection measured.
BEST_METRIC_PREFIX = "best/"  # best/objective, best/val_acc, best/test_acc, best/gan_test
# The best point's numbers as selection measured them (the draw that chose it), kept beside the
# confirmed ones: best/selection_objective, best/selection_test_acc, best/selection_gan_test.
BEST_SELECTION_PREFIX = "best/selection_"
COUNT_METRIC_PREFIX = "trials/"  # trials/finished, trials/diverged, trials/stopped, trials/failed
# The experiment's shared runs-table view (MLflow UI: ?viewStateShareKey=<key>).
VIEW_STATE_TAG = "mlflow.sharedViewState."
VIEW_STATE_KEY = "sweep-runs"


class Role(StrEnum):
    """Value of the tag ``sweep.role``."""

    PARENT = "parent"
    TRIAL = "trial"


JUDGES_EXPERIMENT = "judges"  # the MLflow experiment holding one run per trained judge
JUDGE_FILE = "judge.pt"  # a judge run's artifact
CHECKPOINTS = "checkpoints"  # artifact folder of a trial's best.pt / last.pt
BEST_CHECKPOINT = f"{CHECKPOINTS}/best.pt"
LAST_CHECKPOINT = f"{CHECKPOINTS}/last.pt"
IMAGES = "images"  # artifact folder of a trial's PNGs
CURVES = "curves"  # artifact folder of every other file a trial writes
WARM_START_FILE = "warm_start.json"  # parent artifact: each warm-start run's id, sweep, params, values
HYPERVOLUME = "sweep/hypervolume"  # parent metric: area the accuracy/GAN-test front dominates above (0, 0)


@dataclass(frozen=True)
class LossNames:
    """How a loss kind is shown: in trial names, in tables, in the paper's figures."""

    abbrev: str  # trial names: "sm λ1e-5 μ1e-3 s0"
    short: str  # Table 2 captions, Pareto legends
    paper: str  # Table 1, Fig. 1 and Fig. 3: the paper's names for its four models


# In the paper's order (baseline first).
LOSS_NAMES: dict[str, LossNames] = {
    "ce": LossNames("base", "baseline", "Baseline ResNet"),
    "anti_score_matching": LossNames("asm", "anti-score-matching", "with Anti-Score-Matching"),
    "grad_norm": LossNames("gn", "gradient norm", "with Grad-Norm regularization"),
    "score_matching": LossNames("sm", "score matching", "with Score-Matching"),
}


class TrialRecord(BaseModel):
    """One trial as the analysis reads it back: identity, point, outcome, where its weights are.

    Fields the sweep does not write for every trial (a hand-made store, an older sweep) are
    optional.
    """

    model_config = ConfigDict(extra="ignore")

    run_id: str
    run_name: str  # the point's display name
    sweep: str | None = None
    parent_run_id: str | None = None
    key: str | None = None
    trial_id: str | None = None
    loss: str | None = None  # loss.kind
    lam: float | None = None  # λ
    mu: float | None = None  # μ
    seed: int | None = None
    status: Status
    attempts: int | None = None
    selection_split: SelectionSplit | None = None  # None: an older sweep (it selected on test)
    judge: str | None = None  # judge run id
    judge_key: str | None = None
    judge_arch: str | None = None
    best_objective: float | None = None
    checkpoint_uri: str | None = None
