"""kill -9 of the sweep driver mid-sweep, then ``--resume``: nothing rerun, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import psutil
import pytest

from helpers import TINY, child_runs, run_sweep
from sweep import tracking
from trainer import keys

EPOCHS = 5


def _args(uri: str, storage, resume: bool = False) -> list[str]:
    sets = [*TINY, f"tracking.uri={uri}", f"storage_path={storage}", "experiment=resume-test",
            f"trainer.epochs={EPOCHS}", "trainer.eval.every=3", "max_concurrent_trials=1",
            "trainer.data.train_size=768",  # epochs long enough to kill the driver mid-trial
            "search.grid.loss.lam=[1.0e-3]", "search.points=[{loss.preset: baseline}]"]  # fmt: skip
    return ["--name", "killed", *sum((["--set", s] for s in sets), []), *(["--resume"] if resume else [])]


def _wait_for_mid_sweep(uri: str, proc: subprocess.Popen, timeout: float = 240) -> tuple[set[str], str]:
    """Poll MLflow until one trial finished and another has logged two epochs; their keys.

    After the second epoch's report, the first epoch's checkpoint is in Ray's experiment state."""
    mc = mlflow.MlflowClient(uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the driver ended before it could be killed mid-sweep"
        parent = tracking.find_parent(mc, "resume-test", "killed")
        if parent:
            runs = child_runs(uri, "resume-test", parent)
            done = {r.data.tags["trial.key"] for r in runs if r.data.tags.get("trial.status") == "finished"}
            running = [
                r
                for r in runs
                if r.data.tags.get("trial.status") == "running"
                and max((m.step for m in mc.get_metric_history(r.info.run_id, keys.TRAIN_LOSS)), default=0) >= 2
            ]
            if done and running:
                return done, running[0].data.tags["trial.key"]
        time.sleep(0.3)
    raise AssertionError("the sweep never reached the middle (one trial finished, one running)")


@pytest.mark.slow  # ~40 s: a sweep killed mid-trial, then resumed
def test_kill_driver_then_resume_finishes_every_trial_once(mlflow_server, tmp_path, monkeypatch):
    storage = tmp_path / "ray"
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *_args(mlflow_server.uri, storage)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        done_before, interrupted = _wait_for_mid_sweep(mlflow_server.uri, driver)
        family = psutil.Process(driver.pid).children(recursive=True)
        killed_at = time.time() * 1000
        os.kill(driver.pid, signal.SIGKILL)
        for proc in family:  # the driver's private Ray cluster dies with it, as on a crashed host
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        driver.wait(timeout=30)
        psutil.wait_procs(family, timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()

    monkeypatch.chdir(tmp_path)  # resume from the sweep's directory, as the driver printed
    assert run_sweep(_args(mlflow_server.uri, storage, resume=True)) == 0

    mc = mlflow.MlflowClient(mlflow_server.uri)
    parent = tracking.find_parent(mc, "resume-test", "killed")
    exp = mc.get_experiment_by_name("resume-test")
    assert len(mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")) == 1
    runs = child_runs(mlflow_server.uri, "resume-test", parent)
    assert len(runs) == 2  # one score-matching point and the baseline, no duplicates
    by_key = {r.data.tags["trial.key"]: r for r in runs}
    assert len(by_key) == 2
    for key, run in by_key.items():
        assert run.data.tags["trial.status"] == "finished", run.info.run_name
        assert run.info.status == "FINISHED"
        history = mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)
        # every epoch logged once: a resumed trial does not log again an epoch MLflow holds
        assert {m.step for m in history} == set(range(1, EPOCHS + 1)), run.info.run_name
        assert len(history) == EPOCHS, (run.info.run_name, sorted(m.step for m in history))
    for key in done_before:  # finished before the kill: not started again, nothing new logged
        run = by_key[key]
        assert run.data.tags["trial.attempts"] == "1"
        assert max(m.timestamp for m in mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)) < killed_at
    # The interrupted trial continued its own run from its checkpoint: a second start, its
    # first epoch trained (and logged) once, before the kill, and the rest after it.
    run = by_key[interrupted]
    assert run.data.tags["trial.attempts"] == "2"
    history = mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)
    assert [m.timestamp < killed_at for m in history if m.step == 1] == [True]
    assert max(m.timestamp for m in history) > killed_at
