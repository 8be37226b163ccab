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

from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.tune.trainable.function_trainable import wrap_function

from helpers import TINY, child_runs, run_sweep
from sweep import recovery, tracking
from sweep.engine import trainable as sweep_tune
from sweep.record import Tag
from trainer import keys

EPOCHS = 5


def _args(uri: str, storage, resume: bool = False) -> list[str]:
    sets = [*TINY, f"tracking.uri={uri}", f"storage_path={storage}", "experiment=resume-test",
            f"trainer.epochs={EPOCHS}", "trainer.eval.every=3", "max_concurrent_trials=1",
            "trainer.data.train_size=768",  # epochs long enough to kill the driver mid-trial
            "search.grid.loss.lam=[1.0e-3]", "search.points=[{loss.preset: baseline}]"]  # fmt: skip
    return ["--name", "killed", *sum((["--set", s] for s in sets), []), *(["--resume"] if resume else [])]


class _Restored:
    """Stands for Tune's FunctionTrainable: records what it was asked to restore."""

    def __init__(self):
        self.got = []

    def restore(self, result):
        self.got.append(result)
        return "restored"


class _Trainable(sweep_tune._LostCheckpoint, _Restored):
    pass


def _result(path) -> _TrainingResult:
    return _TrainingResult(checkpoint=tune.Checkpoint.from_directory(str(path)), metrics={"epoch": 2})


def test_a_checkpoint_that_exists_is_restored_as_tune_recorded_it(tmp_path):
    (tmp_path / "checkpoint_000002").mkdir()
    (tmp_path / "checkpoint_000005").mkdir()
    result, trainable = _result(tmp_path / "checkpoint_000002"), _Trainable()
    assert trainable.restore(result) == "restored"
    assert trainable.got == [result]


def test_a_lost_checkpoint_is_replaced_by_the_newest_one_in_the_trial_folder(tmp_path):
    # Tune's state names checkpoint_000002, which the driver deleted after the trial wrote newer ones
    for name in ("checkpoint_000003", "checkpoint_000010", "checkpoint_tmp", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint_000010" / "last.pt").write_text("epoch 10")
    (tmp_path / "checkpoint_000011").write_text("a file, not a checkpoint folder")
    result, trainable = _result(tmp_path / "checkpoint_000002"), _Trainable()
    assert trainable.restore(result) == "restored"
    assert trainable.got == [result]  # restored where Tune's state says, so Tune can delete it later
    assert (tmp_path / "checkpoint_000002" / "last.pt").read_text() == "epoch 10"
    assert (tmp_path / "checkpoint_000002" / recovery.LOST_NOTE).read_text() == (
        "the Tune checkpoint checkpoint_000002 of this trial was gone; continued from checkpoint_000010")
    assert not (tmp_path / "checkpoint_000010").exists()  # moved, not copied: one checkpoint kept
    assert (tmp_path / "checkpoint_000003").is_dir()


def test_a_lost_checkpoint_with_none_left_becomes_an_empty_one(tmp_path):
    # the trial then finds no last.pt in it, and sweep.recovery continues from MLflow's last.pt
    result, trainable = _result(tmp_path / "checkpoint_000002"), _Trainable()
    assert trainable.restore(result) == "restored"
    assert trainable.got == [result]
    assert [p.name for p in (tmp_path / "checkpoint_000002").iterdir()] == [recovery.LOST_NOTE]
    assert sweep_tune.newest_checkpoint(result.checkpoint.filesystem, str(tmp_path / "gone")) is None


def test_the_sweeps_trainable_class_carries_the_lost_checkpoint_restore():
    trainable = tune.with_resources(tune.with_parameters(sweep_tune._trainable, ctx=None), {"cpu": 1})
    cls = wrap_function(trainable)
    assert cls.restore is not tune.Trainable.restore
    assert cls.__mro__.index(sweep_tune._LostCheckpoint) < cls.__mro__.index(tune.Trainable)


def _lose_named_checkpoints(storage) -> int:
    """What a killed driver can leave: the checkpoint its saved state names deleted, a newer one kept.

    Every trial folder's ``checkpoint_N`` becomes ``checkpoint_N+1`` (same content), so Tune's state
    names a checkpoint that no longer exists. Returns how many were moved."""
    moved = 0
    for ckpt in sorted(storage.glob("killed/*/checkpoint_*"), reverse=True):
        index = int(ckpt.name.split("_")[1])
        ckpt.rename(ckpt.with_name(f"checkpoint_{index + 1:06d}"))
        moved += 1
    return moved


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
def test_kill_driver_then_resume_finishes_every_trial_once(ray_cluster, mlflow_server, tmp_path, monkeypatch):
    """Also with the checkpoint named in the killed driver's state lost (a trial deletes its older
    one once Tune records a newer, and Tune saves its state only every 10 s or more).

    The killed driver saves Tune's state at every step (TUNE_GLOBAL_CHECKPOINT_S=0), so that state
    names the interrupted trial's checkpoint and the finished trial's end: by default a kill within
    10 s of them leaves a state that does not (a trial Tune names no checkpoint of continues from
    MLflow's last.pt: tests/test_sweep_checkpoints.py)."""
    storage = tmp_path / "ray"
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *_args(mlflow_server.uri, storage)],
        cwd=tmp_path, env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
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

    assert _lose_named_checkpoints(storage) >= 2  # the finished trial's and the interrupted one's
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
    assert "was gone; continued from checkpoint_" in run.data.tags[Tag.RESTARTED]  # the run says why
    history = mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)
    assert [m.timestamp < killed_at for m in history if m.step == 1] == [True]
    assert max(m.timestamp for m in history) > killed_at
