"""An Optuna sweep stopped mid-training (Ctrl-C, or ``kill -9`` of the driver) and continued with
``--resume``: every interrupted trial continues from its epoch checkpoint into the same MLflow run
(same run id, ``trial.attempts`` counted, no ``trial.restarted``), each epoch is logged once, no run
is duplicated or deleted, and the study learns every trial's final result. Real drivers in
subprocesses on a sqlite store, as in test_sweep_kill.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from helpers import TINY
from sweep import kill_points, recovery, tracking
from sweep.record import Tag
from test_sweep_kill import _wait
from trainer import keys
from trainer.checkpoint import save_checkpoint

# --- a trial Tune hands no checkpoint (fast) ------------------------------------------------------


def _logged_run(uri: str, exp: str, parent: str, key: str, epochs: int, last_pt: Path | None) -> tracking.TrialRun:
    """A point's run holding ``epochs`` epochs and, if given, ``last_pt`` uploaded as its last.pt."""
    run = tracking.TrialRun(uri, exp, parent, "s", key=key)
    run.open("p", "t1", {})
    for epoch in range(1, epochs + 1):
        run.log_metrics({keys.EPOCH: epoch, keys.TRAIN_LOSS: 1.0 / epoch}, step=epoch)
    if last_pt is not None:
        run.log_checkpoint(last_pt)
    return run


def test_no_tune_checkpoint_but_epochs_in_mlflow_continues_from_mlflows_last_pt(trial_store, tmp_path):
    # The driver was killed after the trial logged 3 epochs (last.pt of epoch 2 uploaded) and before
    # Tune saved its state: the resumed search proposes the point again, with no checkpoint.
    uri, exp, parent = trial_store
    upload = tmp_path / "up" / "last.pt"
    save_checkpoint(upload, {"model": {}, "config": {}, "epoch": 2})
    run = _logged_run(uri, exp, parent, "k", 3, upload)

    again = tracking.TrialRun(uri, exp, parent, "s", key="k")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    resumed, note = recovery.restore_checkpoint(None, ckpt, again)
    assert resumed and "no checkpoint" in note and "epoch 2" in note, note
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]
    again.open("p", "t2", {}, from_scratch=not resumed, restarted=note)
    assert again.run_id == run.run_id and again.attempt == 2 and again.holds(3) and not again.holds(4)


def test_no_tune_checkpoint_and_nothing_usable_in_mlflow(trial_store, tmp_path):
    uri, exp, parent = trial_store
    # A new point: nothing to continue, nothing to say.
    fresh = tracking.TrialRun(uri, exp, parent, "s", key="new")
    ckpt = tmp_path / "c1"
    ckpt.mkdir()
    assert recovery.restore_checkpoint(None, ckpt, fresh) == (False, None) and list(ckpt.iterdir()) == []
    # A run opened but with no epoch yet: reused as it is, no note.
    _logged_run(uri, exp, parent, "opened", 0, None)
    assert recovery.restore_checkpoint(None, ckpt, tracking.TrialRun(uri, exp, parent, "s", key="opened")) == (False, None)
    # Epochs but no last.pt: from scratch, the run replaced (not duplicated) and the reason tagged.
    old = _logged_run(uri, exp, parent, "k", 1, None)
    again = tracking.TrialRun(uri, exp, parent, "s", key="k")
    resumed, note = recovery.restore_checkpoint(None, ckpt, again)
    assert not resumed and "no usable" in note and "from scratch" in note and list(ckpt.iterdir()) == []
    again.open("p", "t2", {}, from_scratch=True, restarted=note)
    runs = MlflowClient(uri).search_runs([exp], f"tags.`{Tag.KEY}` = 'k'")
    assert [r.info.run_id for r in runs] == [again.run_id] != [old.run_id]
    assert runs[0].data.tags[Tag.RESTARTED] == note and again.attempt == 2


def test_a_searcher_restored_from_before_a_proposal_proposes_the_same_point(tmp_path):
    # Why the fallback above matters for Optuna: Tune restores the searcher pickled with its last
    # state, and a proposal made after that save comes again, so its point (and run) come back.
    from sweep.search import OptunaSearcher, fail_stale_trials

    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"loss.lam": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}

    def searcher() -> OptunaSearcher:
        return OptunaSearcher(space=space, metric=keys.OBJECTIVE, study_name="s",
                                     storage=optuna.storages.RDBStorage(url),
                                     sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))  # fmt: skip

    first = searcher()
    first.suggest("t1")
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's last saved state
    lost = first.suggest("t2")  # proposed, trained, logged; the driver killed before the next save
    fail_stale_trials("s", url)  # what --resume does first
    again = searcher()
    again.restore(str(tmp_path / "searcher.pkl"))
    assert again.suggest("t3") == lost


# --- whole sweeps, stopped and resumed (slow) ------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
NAME = "opt-resume"
EPOCHS = 6  # long enough that both trials are mid-training when the driver is stopped
TRIALS = 2


def _args(tmp_path: Path, resume: bool) -> list[str]:
    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.epochs={EPOCHS}",
            "search.method=optuna", f"search.n_trials={TRIALS}", "search.seed_with_grid=false",
            "search.space.loss.lam={low: 1.0e-5, high: 1.0e-3, log: true}",
            "search.space.loss.mu={low: 1.0e-5, high: 1.0e-3, log: true}",
            f"max_concurrent_trials={TRIALS}", "analysis=false", "confirm.enabled=false"]  # fmt: skip
    return [sys.executable, "-m", "sweep.run", "--name", NAME, *sum((["--set", s] for s in sets), []),
            *(["--resume"] if resume else [])]  # fmt: skip


def _drive(tmp_path: Path, resume: bool, log: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNE_GLOBAL_CHECKPOINT_S": "0"}  # Tune's state at every step
    env.pop(kill_points.ENV_KILL_AT, None)
    if kill_at:
        env[kill_points.ENV_KILL_AT] = kill_at
    return subprocess.Popen(_args(tmp_path, resume), cwd=tmp_path, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _trials(mc: MlflowClient, view: int = ViewType.ACTIVE_ONLY) -> list:
    exp = mc.get_experiment_by_name(NAME)
    if exp is None:
        return []
    return mc.search_runs([exp.experiment_id], f"tags.`{Tag.ROLE}` = 'trial'", run_view_type=view)


def _epochs(mc: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in mc.get_metric_history(run_id, keys.EPOCH)]


def _ctrl_c_mid_training(tmp_path: Path, mc: MlflowClient) -> None:
    """Start the sweep; SIGINT once every trial has logged 2 epochs; it must exit 130."""
    log = tmp_path / "driver-0.log"
    sent: list[bool] = []

    def watch(p: subprocess.Popen) -> None:
        runs = _trials(mc)
        if not sent and len(runs) == TRIALS and all(len(_epochs(mc, r.info.run_id)) >= 2 for r in runs):
            os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in the driver's terminal
            sent.append(True)

    assert _wait(_drive(tmp_path, resume=False, log=log), watch=watch) == 130, log.read_text()[-3000:]


def _kill_mid_training(tmp_path: Path, mc: MlflowClient) -> None:
    """The driver SIGKILLs itself when it receives a trial's second epoch (sweep.kill_points)."""
    log = tmp_path / "driver-0.log"
    assert _wait(_drive(tmp_path, resume=False, log=log, kill_at="result")) == -signal.SIGKILL, log.read_text()[-3000:]


@pytest.mark.slow  # two driver starts of a 2-trial, 6-epoch Optuna sweep per case: ~1-2.5 min each on 2 cores
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("stop", [_ctrl_c_mid_training, _kill_mid_training], ids=["ctrl-c", "kill-9"])
def test_interrupted_optuna_trials_continue_from_their_checkpoints_into_the_same_runs(ray_cluster, tmp_path, stop):
    mc = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stop(tmp_path, mc)
    before = {r.data.tags[Tag.KEY]: r for r in _trials(mc)}
    trained = {key: _epochs(mc, r.info.run_id) for key, r in before.items()}
    # The kill comes with one trial's second epoch; on a busy machine the other may have logged none yet.
    interrupted = {key for key, steps in trained.items() if 0 < max(steps, default=0) < EPOCHS}
    assert interrupted, f"no trial was stopped mid-training: {trained}"

    log = tmp_path / "driver-1.log"
    assert _wait(_drive(tmp_path, resume=True, log=log)) == 0, log.read_text()[-3000:]

    after = {r.data.tags[Tag.KEY]: r for r in _trials(mc)}
    assert len(_trials(mc, ViewType.ALL)) == len(after) == TRIALS  # nothing duplicated, nothing deleted
    assert set(before) <= set(after)
    for key in interrupted:
        old, run = before[key], after[key]
        name = run.info.run_name
        assert run.info.run_id == old.info.run_id, f"{name}: replaced by a new run"
        assert Tag.RESTARTED not in run.data.tags, (name, run.data.tags.get(Tag.RESTARTED))
        assert int(run.data.tags[Tag.ATTEMPTS]) == int(old.data.tags[Tag.ATTEMPTS]) + 1, name
        assert run.info.status == "FINISHED" and run.data.tags[Tag.STATUS] == "finished", name
        steps = _epochs(mc, run.info.run_id)
        assert steps == list(range(1, EPOCHS + 1)), (name, steps)  # one point per epoch, none repeated
        for metric in (keys.TRAIN_LOSS, keys.VAL_ACC):
            history = sorted(m.step for m in mc.get_metric_history(run.info.run_id, metric))
            assert history == list(range(1, EPOCHS + 1)), (name, metric, history)
        # Continued, not retrained: the epochs logged before the stop keep their first timestamps.
        first = {m.step: m.timestamp for m in mc.get_metric_history(old.info.run_id, keys.TRAIN_LOSS)}
        kept = {m.step: m.timestamp for m in mc.get_metric_history(run.info.run_id, keys.TRAIN_LOSS)}
        assert all(kept[s] == first[s] for s in trained[key] if s in first), name

    for run in after.values():  # every trial, interrupted or not yet started at the stop, trained once to the end
        assert _epochs(mc, run.info.run_id) == list(range(1, EPOCHS + 1)), run.info.run_name
    # The study learnt each trial's final result at the trial's own parameters.
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{tmp_path / 'sweep_results' / (NAME + '-optuna.db')}")
    complete = {tuple(sorted(t.params.items())) for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])}
    for run in after.values():
        params = tuple(sorted((k, float(run.data.params[k])) for k in ("loss.lam", "loss.mu")))
        assert params in complete, (run.info.run_name, params, complete)
