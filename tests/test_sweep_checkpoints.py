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
