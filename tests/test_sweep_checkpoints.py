"""One owner per checkpoint: Tune never saves its experiment state because a trial checkpointed,
and a trial keeps one Tune checkpoint on storage (sweep.engine.tuner.CHECKPOINTS,
sweep.engine.trainable.drop_older).

Tune saves and syncs the whole experiment state (every trial's, about 30 kB each) after every
``num_to_keep`` checkpoints of any trial; with ``num_to_keep=1`` that is after every epoch of every
trial, so the cost per trial grows with the number of trials. These tests count saves, not seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from ray import tune

TRIALS, EPOCHS = 2, 10


class _Saves(tune.Callback):
    """Counts Tune's experiment-state saves: Tune asks every callback for its state at each one."""

    count = 0  # on the class: Tune may hold a copy of the instance

    def get_state(self) -> None:
        type(self).count += 1
        return None


@pytest.mark.slow  # a Tune run on the session's Ray cluster: ~10 s
def test_checkpoints_do_not_save_the_experiment_state_and_one_stays_per_trial(ray_cluster, tmp_path, monkeypatch):
    from sweep.engine import session
    from sweep.engine.trainable import drop_older
    from sweep.engine.tuner import CHECKPOINTS

    def epochs(config: dict) -> None:  # nested: pickled by value, so workers need not import this file
        """Reports a 1 kB checkpoint per epoch and keeps only the newest, as the sweep's trials do."""
        for epoch in range(EPOCHS):
            with tempfile.TemporaryDirectory() as d:
                Path(d, "last.pt").write_bytes(b"0" * 1024)
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))
            drop_older(tune.get_checkpoint())

    # Tune's periodic save as good as off: what remains are its first and last saves, and any a
    # checkpoint forces (with num_to_keep=1, one per epoch of each trial: 20 here).
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1000000")
    _Saves.count = 0
    tuner = tune.Tuner(
        tune.with_resources(epochs, {"cpu": 1}),
        param_space={"i": tune.grid_search(list(range(TRIALS)))},
        run_config=tune.RunConfig(
            name="saves", storage_path=str(tmp_path), checkpoint_config=CHECKPOINTS, callbacks=[_Saves()], verbose=0
        ),
    )
    session.start(None)  # joins the session's cluster (RAY_ADDRESS) on loopback, as a sweep does
    try:
        grid = tuner.fit()
    finally:
        session.stop()
    assert not grid.errors
    assert _Saves.count <= 3, f"{_Saves.count} experiment-state saves for {TRIALS * EPOCHS} checkpoints"
    kept = sorted(p.name for p in tmp_path.glob("saves/*/checkpoint_*"))
    assert kept == [f"checkpoint_{EPOCHS - 1:06d}"] * TRIALS  # the newest of each trial, nothing else


def test_the_sweeps_tune_keeps_every_checkpoint_so_it_forces_no_save():
    # num_to_keep is what makes Tune force a save (ray/tune/execution/experiment_state.py,
    # on_trial_checkpoint); the trial deletes its older checkpoints instead.
    from sweep.engine.tuner import CHECKPOINTS

    assert CHECKPOINTS.num_to_keep is None


def test_a_finished_sweep_keeps_one_checkpoint_per_trial(tiny_sweep):
    trials = [p for p in (tiny_sweep.storage_path / tiny_sweep.name).iterdir() if p.is_dir()]
    assert len(trials) == tiny_sweep.points
    held = {p.name: sorted(c.name for c in p.glob("checkpoint_*")) for p in trials}
    assert all(len(names) <= 1 for names in held.values()), held  # the diverged trial may hold none
    assert sum(names == ["checkpoint_000001"] for names in held.values()) >= 3, held  # 2 epochs each


# --- a driver killed before Tune saved any checkpoint of its trials (slow) -------------------------

KILLED = "unsaved"
KILLED_EPOCHS = 3


def _drive(tmp_path: Path, resume: bool, log: Path, env: dict[str, str]):
    import os
    import subprocess
    import sys

    from helpers import TINY
    from sweep import kill_points

    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.epochs={KILLED_EPOCHS}",
            "max_concurrent_trials=1", "search.grid.loss.lam=[1.0e-3]", "search.points=[{loss.preset: baseline}]",
            "analysis=false", "confirm.enabled=false"]  # fmt: skip
    argv = [sys.executable, "-m", "sweep.run", "--name", KILLED, *sum((["--set", s] for s in sets), []),
            *(["--resume"] if resume else [])]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k != kill_points.ENV_KILL_AT}
    return subprocess.Popen(argv, cwd=tmp_path, env={**environ, **env}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


@pytest.mark.slow  # two driver starts of a 2-trial, 3-epoch sweep: a few minutes on 2 loaded cores
@pytest.mark.timeout(1200)
def test_a_driver_killed_before_tune_saved_its_trials_checkpoints_is_continued_from_mlflow(ray_cluster, tmp_path):
    """Tune saves its state every 10 s or more, so a driver killed between two saves leaves trials
    whose epochs MLflow holds but whose checkpoints Tune's state does not name. Here the state is
    saved once, at the start, so it names none. sweep.recovery then continues the trial from the
    last.pt MLflow holds, in its own run; without it the point starts again from scratch."""
    import signal

    from mlflow import MlflowClient

    from sweep import kill_points
    from sweep.record import Tag
    from test_sweep_kill import _wait
    from trainer import keys

    log = tmp_path / "driver-0.log"
    never = {"TUNE_GLOBAL_CHECKPOINT_S": "1000000", kill_points.ENV_KILL_AT: "result"}  # killed at a trial's epoch 2
    assert _wait(_drive(tmp_path, False, log, never)) == -signal.SIGKILL, log.read_text()[-3000:]
    mc = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mc.get_experiment_by_name(KILLED).experiment_id
    before = {r.data.tags[Tag.KEY]: r for r in mc.search_runs([exp], f"tags.`{Tag.ROLE}` = 'trial'")}
    assert len(before) == 1, before  # one trial at a time: the one killed mid-training
    killed_at = max(m.timestamp for r in before.values() for m in mc.get_metric_history(r.info.run_id, keys.EPOCH))

    log = tmp_path / "driver-1.log"
    assert _wait(_drive(tmp_path, True, log, {})) == 0, log.read_text()[-3000:]
    after = {r.data.tags[Tag.KEY]: r for r in mc.search_runs([exp], f"tags.`{Tag.ROLE}` = 'trial'")}
    assert len(after) == 2
    for key, run in after.items():
        assert run.data.tags[Tag.STATUS] == "finished", run.info.run_name
        steps = sorted(m.step for m in mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS))
        assert steps == list(range(1, KILLED_EPOCHS + 1)), (run.info.run_name, steps)  # each epoch once
    (key, old), = before.items()
    run = after[key]
    assert run.info.run_id == old.info.run_id and run.data.tags[Tag.ATTEMPTS] == "2"  # its own run, continued
    assert "Tune held no checkpoint" in run.data.tags[Tag.RESTARTED], run.data.tags[Tag.RESTARTED]
    first = [m.timestamp for m in mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS) if m.step == 1]
    assert first and first[0] <= killed_at  # epoch 1 trained once, before the kill
