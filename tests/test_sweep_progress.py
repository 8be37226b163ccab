"""The driver's live trial lines (sweep.engine.progress.TrialProgress), fed Tune-like trials and results."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.config import ObjectiveConfig
from sweep.points import Point
from sweep.trial import POINT_KEY, SweepContext
from trainer import keys


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)
    status: str = "RUNNING"


def test_objective_shows_a_dash_until_the_first_evaluation_and_trials_by_point(capsys):
    from sweep.engine.progress import TrialProgress

    pa, pb = Point((("loss.lam", 1e-3), ("loss.mu", 1e-4)), 0), Point((("loss.preset", "baseline"),), 0)
    ctx = SweepContext("s", "sqlite://", "1", "p", {}, ObjectiveConfig(), None, 1, points={pa.key: pa, pb.key: pb},
                       names={pa.key: "sm λ1e-3 μ1e-4 s0", pb.key: "base s0"})  # fmt: skip
    progress = TrialProgress(ctx, epochs=4, total=2, every=0.0)
    a, b = FakeTrial("t0", {POINT_KEY: pa.key}), FakeTrial("t1", {POINT_KEY: pb.key})
    trials = [a, b]
    progress.on_step_begin(0, trials)
    # Epoch 1: validation accuracy (what selects) is logged every epoch, the objective (needs GAN-test) only at evaluations.
    progress.on_trial_result(1, trials, a, {keys.EPOCH: 1, keys.STATUS: "running", keys.VAL_ACC: 0.4,
                                            keys.OBJECTIVE: 0.0})  # fmt: skip
    progress.on_trial_result(2, trials, a, {keys.EPOCH: 2, keys.STATUS: "running", keys.VAL_ACC: 0.6,
                                            keys.GAN_TEST: 0.2, keys.OBJECTIVE: 0.4})  # fmt: skip
    progress.on_trial_result(3, trials, b, {keys.EPOCH: 1, keys.STATUS: "diverged", keys.OBJECTIVE: 0.0})
    b.status = "TERMINATED"
    progress.on_trial_complete(3, trials, b)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "trials: 2 to run; a line per trial epoch (at most every 0 s per trial)"
    assert "sm λ1e-3 μ1e-4 s0" in lines[1] and "epoch 1/4  objective -  val acc 0.400" in lines[1]
    assert "epoch 2/4  objective 0.400  val acc 0.600" in lines[2]
    assert lines[3].split()[:2] == ["base", "s0"] and "diverged at epoch 1/4  objective 0.000" in lines[3]
    assert "[1/2 trials done" in lines[3]
    assert not any("_trainable_" in line or "t0" in line.split() for line in lines)


def test_a_resumed_sweep_counts_only_the_trials_left_to_run(capsys):
    from sweep.engine.progress import TrialProgress

    ctx = SweepContext("s", "sqlite://", "1", "p", {}, ObjectiveConfig(), None, 1)
    progress = TrialProgress(ctx, epochs=4, total=10, every=0.0)
    # Restored from Tune's state: 4 ended (TERMINATED), 1 errored (runs again), 2 paused mid-training;
    # the grid's last 3 trials are not created yet.
    statuses = ["TERMINATED"] * 4 + ["ERROR"] + ["PAUSED"] * 2
    trials = [FakeTrial(f"t{i}", status=s) for i, s in enumerate(statuses)]
    progress.on_step_begin(0, trials)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("trials: 6 to run (4 of 10 ended before this resume); ")


def test_the_eta_waits_for_measured_epochs_and_leaves_out_the_start_up(capsys, monkeypatch):
    """Two trials side by side, 4 epochs each, 4 trials in all: a first result 60 s after the start
    (start-up) gives no ETA; then epochs of 10 s measured between results give 10 s × the epochs
    left / the 2 trials running."""
    from sweep.engine import progress as sweep_tune
    from sweep.engine.progress import TrialProgress

    clock = [1000.0]
    monkeypatch.setattr(sweep_tune.time, "time", lambda: clock[0])
    ctx = SweepContext("s", "sqlite://", "1", "p", {}, ObjectiveConfig(), None, 1)
    progress = TrialProgress(ctx, epochs=4, total=4, every=0.0)
    a, b = FakeTrial("t0"), FakeTrial("t1")
    trials = [a, b]
    progress.on_step_begin(0, trials)
    clock[0] += 60  # Ray's worker start, the dataset and the judge's download, then the first epoch
    progress.on_trial_result(1, trials, a, {keys.EPOCH: 1, keys.STATUS: "running"})
    progress.on_trial_result(2, trials, b, {keys.EPOCH: 1, keys.STATUS: "running"})
    clock[0] += 10
    progress.on_trial_result(3, trials, a, {keys.EPOCH: 2, keys.STATUS: "running"})
    lines = capsys.readouterr().out.splitlines()[1:]
    assert "ETA" not in lines[0] and "ETA" not in lines[1], lines
    # Left: a 2, b 3, two trials not created yet 8: 13 epochs of 10 s, two at a time.
    assert lines[2].endswith("[0/4 trials done, ETA ~1 min 05 s]"), lines[2]
    # A retried trial's next result comes after its restart: not an epoch's time.
    progress.on_trial_recover(4, trials, b)
    clock[0] += 300
    progress.on_trial_result(5, trials, b, {keys.EPOCH: 2, keys.STATUS: "running"})
    assert progress.epoch_s == [10.0]
