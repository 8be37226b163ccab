"""A trial that stops reporting is named in one line; with ``trial_timeout`` it is ended as
``failed: timed out`` and retried from its checkpoint. The rules on a fake clock; then a real
driver whose trial worker is stopped with SIGSTOP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import TINY
from sweep.stall import STALL_MIN_S, StallWatch
from trainer import keys

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watch(timeout: float | None = None) -> tuple[StallWatch, Clock, list[str], list[tuple]]:
    clock, said, killed = Clock(), [], []
    return StallWatch(timeout, lambda pid, node: killed.append((pid, node)), said.append, clock), clock, said, killed


def _epochs(watch: StallWatch, clock: Clock, n: int, every: float, epoch_s: float) -> None:
    for i in range(n):
        clock.now += every
        watch.result("t1", "sm λ1e-3 s0", {keys.EPOCH: i + 1, keys.EPOCH_SECONDS: epoch_s, "pid": 4242,
                                            "node_id": "n1"})  # fmt: skip
        watch.check()


def test_a_silent_trial_is_named_once_past_five_times_its_longest_epoch_and_when_it_reports_again():
    watch, clock, said, killed = _watch()
    watch.started("t1", "sm λ1e-3 s0")
    clock.now += 90  # start-up (data, judge) is no epoch: it does not set the bound
    _epochs(watch, clock, 3, every=12, epoch_s=10)
    assert watch.bound("t1") == 60  # 5 x the longest gap between its reports (12 s), at least 30 s
    clock.now += 59
    watch.check()
    assert said == []
    clock.now += 2
    watch.check()
    clock.now += 100
    watch.check()  # named once, not at every look
    assert said == ["  sm λ1e-3 s0            no report for 1 min 01 s; its last epoch took 10 s"]
    _epochs(watch, clock, 1, every=0, epoch_s=10)
    assert said[-1] == "  sm λ1e-3 s0            reporting again after 2 min 41 s"
    assert killed == [] and watch.error("t1") is None  # no limit set: nothing ended


def test_short_epochs_are_named_no_sooner_than_the_floor():
    watch, clock, said, _ = _watch()
    watch.started("t1", "p")
    _epochs(watch, clock, 3, every=1, epoch_s=0.5)
    assert watch.bound("t1") == STALL_MIN_S
    watch.ended("t1")
    clock.now += 1000
    watch.check()
    assert said == []  # an ended trial is not watched


def test_past_the_limit_the_worker_is_ended_and_the_error_says_timed_out():
    watch, clock, said, killed = _watch(timeout=120)
    watch.started("t1", "p")
    _epochs(watch, clock, 2, every=10, epoch_s=8)
    clock.now += 55  # past its bound (50 s): named
    watch.check()
    clock.now += 66  # past the limit
    watch.check()
    assert killed == [(4242, "n1")]
    assert said[0] == "  p                      no report for 55 s; its last epoch took 8 s (trial_timeout 2 min 00 s)"
    assert "failed: timed out (no report for 2 min 01 s, trial_timeout 2 min 00 s)" in said[-1]
    assert watch.error("t1") == "timed out: no report for 2 min 01 s (trial_timeout 2 min 00 s)"
    watch.check()
    assert len(killed) == 1  # once
    watch.started("t1", "p")  # Tune retries it: a later failure is not the limit's
    assert watch.error("t1") is None


def test_a_trial_silent_since_its_start_is_said_to_be_left_running():
    watch, clock, said, killed = _watch(timeout=60)
    watch.started("t1", "p")
    clock.now += 61
    watch.check()
    assert killed == [] and watch.error("t1") is None
    assert "since it started, past trial_timeout 1 min 00 s; its worker is not known before its first epoch" in said[0]


def _pid_of_running_trial(results: Path) -> tuple[int, str]:
    """(pid, trial folder) of a trial whose latest result is an epoch before its last."""
    for path in sorted(results.glob("_trainable_*/result.json")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines and lines[-1].get(keys.STATUS) == "running" and lines[-1].get(keys.EPOCH, 0) >= 1:
            return int(lines[-1]["pid"]), path.parent.name
    raise LookupError


@pytest.mark.slow  # a 2-point sweep with one trial's worker stopped until the limit ends it: 3-5 min
@pytest.mark.timeout(1200)
def test_a_stopped_trial_worker_is_named_then_timed_out_and_retried_to_the_end(ray_cluster, tmp_path):
    # Was: a worker stopped for 240 s gave no line, the ETA froze, and only SIGCONT ended it.
    epochs, limit = 4, 150
    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.epochs={epochs}",
            "max_concurrent_trials=1", "search.grid.loss.lam=[1.0e-3]", "search.points=[{loss.preset: baseline}]",
            "analysis=false", "confirm.enabled=false", f"trial_timeout={limit}"]  # fmt: skip
    log = tmp_path / "driver.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", "--name", "stall", *sum((["--set", s] for s in sets), [])],
        cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        # Tune's state (and the trials' result.json beside it) copied to storage at every step, as
        # every checkpoint forced when num_to_keep was set: the test finds the running trial there.
        env={**os.environ, "PYTHONPATH": str(REPO), "TUNE_GLOBAL_CHECKPOINT_S": "0"},
    )  # fmt: skip
    try:
        deadline = time.time() + 600
        while True:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
            try:
                pid, folder = _pid_of_running_trial(tmp_path / "sweep_results" / "stall")
                break
            except (LookupError, ValueError, OSError):
                time.sleep(0.2)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.time()
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    named = [line for line in out.splitlines() if " no report for " in line]
    ended = [line for line in out.splitlines() if "failed: timed out (no report for " in line]
    assert len(named) == 1 and "; its last epoch took " in named[0] and "(trial_timeout 2 min 30 s)" in named[0], out
    assert len(ended) == 1 and f"its worker (pid {pid}) is ended" in ended[0], out
    assert out.index(named[0]) < out.index(ended[0]) < out.index("retrying from its last checkpoint")
    assert time.time() - stopped >= limit
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    mc = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mc.get_experiment_by_name("stall")
    trials = mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")
    assert len(trials) == 2 and {r.data.tags["trial.status"] for r in trials} == {"finished"}
    retried = [r for r in trials if r.data.tags["trial.attempts"] == "2"]
    assert len(retried) == 1, [(r.info.run_name, r.data.tags["trial.attempts"]) for r in trials]
    steps = sorted(m.step for m in mc.get_metric_history(retried[0].info.run_id, keys.TRAIN_LOSS))
    assert steps == list(range(1, epochs + 1))  # each epoch once, the retry continued from its checkpoint
