"""The search's epoch budget (search.max_epochs_total) is never exceeded, with or without ASHA."""

from __future__ import annotations

import random

import mlflow
import optuna
import pytest

from helpers import TINY, child_runs, run_sweep
from sweep import tracking
from sweep.budget import EpochBudget
from sweep.config_files import load_sweep_config
from trainer import keys
from trainer.config import ConfigError


def _searcher(tmp_path, budget: EpochBudget):
    from sweep.search import OptunaSearcher

    space = {"loss.lam": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}
    return OptunaSearcher(space=space, metric=keys.OBJECTIVE, study_name="s",
                                 storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"),
                                 budget=budget)


@pytest.mark.parametrize("seed", range(6))
def test_searcher_never_proposes_past_the_budget(tmp_path, seed):
    """Tune's loop, simulated: up to 3 trials at a time, each stopped after a random number of
    epochs (as ASHA would) or run to the end; epochs are counted here, apart from the budget."""
    from ray.tune.search import Searcher

    rng = random.Random(seed)
    per_trial, total = 4, rng.randint(4, 30)
    search = _searcher(tmp_path, EpochBudget(total, per_trial))
    running: dict[str, list[int]] = {}  # trial id -> [epochs reached, epochs it will stop at]
    trained, started, n = 0, 0, 0
    while True:
        while len(running) < 3:
            n += 1
            config = search.suggest(f"t{n}")
            if config is None or config == Searcher.FINISHED:
                break
            started += 1
            running[f"t{n}"] = [0, rng.randint(1, per_trial)]
        if config == Searcher.FINISHED and not running:
            break
        assert running, "the searcher waits with nothing running"
        trial = rng.choice(sorted(running))
        running[trial][0] += 1
        trained += 1
        assert trained <= total
        epoch, stop = running[trial]
        search.on_trial_result(trial, {keys.OBJECTIVE: rng.random(), keys.EPOCH: epoch, "training_iteration": epoch})
        if epoch == stop:
            del running[trial]
            search.on_trial_complete(trial, {keys.OBJECTIVE: 0.5, keys.EPOCH: epoch, "training_iteration": epoch})
    assert trained <= total
    # It stopped only when one more full trial would not fit.
    assert trained + per_trial > total and started >= 1


def test_budget_returns_what_a_stopped_trial_did_not_train():
    b = EpochBudget(total=10, per_trial=4)
    b.start("a")
    b.start("b")
    assert not b.can_start() and not b.exhausted()  # 8 reserved: a third 4-epoch trial does not fit
    b.end("a", 1)  # stopped after 1 epoch: 3 come back
    assert b.committed() == 5 and b.can_start()
    b.start("c")
    b.end("b", 4)
    b.end("c", None)  # ended before reporting: nothing trained
    assert b.spent == 5 and b.can_start()  # 5 spent: one more 4-epoch trial fits
    b.start("d")
    b.end("d", 4)
    assert b.spent == 9 and b.exhausted()
    with pytest.raises(RuntimeError, match="cannot pay"):
        b.start("e")


@pytest.mark.parametrize("sets, message", [
    (["search.max_epochs_total=3"], r"max_epochs_total \(3\) cannot pay for one trial of 4 epochs"),
    (["search.method=grid", "search.space={}", "search.max_epochs_total=40"], "is for search.method=optuna"),
])  # fmt: skip
def test_budget_config_errors(sets, message):
    base = ["search.method=optuna", "search.space.loss.lam={low: 1.0e-6, high: 1.0e-2}"]
    with pytest.raises(ConfigError, match=message):
        load_sweep_config("quickstart", [*base, *sets])


@pytest.mark.slow  # a 2-trial Optuna sweep end to end (a local Ray, a judge)
def test_sweep_stops_proposing_when_the_budget_is_spent(ray_cluster, mlflow_server, tmp_path):
    """5 trials asked for, 2 epochs each, 5 trial-epochs: only 2 trials fit (4 epochs)."""
    uri = mlflow_server.uri
    sets = [*TINY, f"tracking.uri={uri}", f"storage_path={tmp_path}", "experiment=budget-test",
            "search.method=optuna", "search.n_trials=5", "search.max_epochs_total=5",
            "confirm.enabled=false", "analysis=false",  # not read here
            "search.space.loss.lam={low: 1.0e-6, high: 1.0e-2}", "search.space.loss.mu={low: 1.0e-5, high: 1.0e-2}"]
    assert run_sweep(["--name", "budget", *sum((["--set", s] for s in sets), [])]) == 0
    parent = tracking.find_parent(mlflow.MlflowClient(uri), "budget-test", "budget")
    runs = child_runs(uri, "budget-test", parent)
    epochs = sum(int(r.data.metrics[keys.EPOCH]) for r in runs)
    assert len(runs) == 2 and epochs == 4


# Each path a trial can take through Tune, driven through the searcher's hooks as Tune calls them.


def test_fifo_with_a_shorter_max_t_is_refused():
    """FIFO ignores max_t: 3 epochs would be trained where the budget reserved 1."""
    with pytest.raises(ConfigError, match=r"scheduler.max_t \(1\) is ASHA's"):
        load_sweep_config("quickstart", ["scheduler.kind=fifo", "scheduler.max_t=1", "trainer.epochs=3"])


def test_a_restart_from_scratch_pays_for_its_epochs_again():
    b = EpochBudget(total=20, per_trial=4)
    b.start("a")
    for epoch in (1, 2, 3):
        b.result("a", epoch)
    b.recovering("a")  # no checkpoint: it starts over at epoch 1
    for epoch in (1, 2, 3, 4):
        b.result("a", epoch)
    assert b.trained["a"] == 7 and b.committed() == 7
    b.end("a", 4)  # the last result again, from on_trial_complete
    assert b.spent == 7 and not b.running


def test_a_restart_from_a_checkpoint_pays_only_for_new_epochs():
    b = EpochBudget(total=20, per_trial=4)
    b.start("a")
    b.result("a", 1)
    b.result("a", 2)
    b.recovering("a")
    b.result("a", 3)  # restored from epoch 2's checkpoint
    b.end("a", 4)  # Tune hands the stopping result to on_trial_complete only
    assert b.spent == 4


def test_a_restart_from_scratch_after_one_epoch_is_counted():
    b = EpochBudget(total=20, per_trial=4)
    b.start("a")
    b.result("a", 1)
    b.recovering("a")
    b.result("a", 1)  # the same epoch number again, but trained again
    b.end("a", 1)
    assert b.spent == 2


def test_an_errored_trial_releases_its_reservation(tmp_path):
    search = _searcher(tmp_path, EpochBudget(8, 4))
    search.suggest("a")
    search.suggest("b")
    assert search.suggest("c") is None  # 8 reserved: wait
    search.on_trial_result("a", {keys.OBJECTIVE: 0.1, keys.EPOCH: 1, keys.STATUS: "running"})
    search.on_trial_complete("a", None, error=True)  # Tune's failure path: no result
    assert search.budget.spent == 1 and search.budget.committed() == 5
    assert search.suggest("c") is None  # 5 + 4 > 8 still
    study = search.study
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


class _Trial:
    def __init__(self, trial_id: str, status: str, last_result: dict | None = None) -> None:
        self.trial_id, self.status, self.last_result = trial_id, status, last_result or {}


def test_a_failed_actor_reuse_releases_the_trial_through_the_watchdog(tmp_path):
    """Tune ends the trial (ERROR) without calling the searcher; the watchdog settles it."""
    from sweep.search import Watchdog

    search = _searcher(tmp_path, EpochBudget(8, 4))
    search.suggest("a")
    search.suggest("b")
    search.on_trial_result("b", {keys.OBJECTIVE: 0.5, keys.EPOCH: 1, keys.STATUS: "running"})
    assert search.suggest("c") is None
    dog = Watchdog(search, idle_s=30, clock=lambda: 0.0)
    dog.on_step_end(0, [_Trial("a", "ERROR"), _Trial("b", "RUNNING")])
    assert search.budget.running.keys() == {"b"} and search.budget.spent == 0
    assert search.suggest("c") is not None  # a's 4 epochs paid for c
    assert search.study.trials[0].state == optuna.trial.TrialState.FAIL
    dog.on_step_end(1, [_Trial("a", "ERROR"), _Trial("b", "RUNNING"), _Trial("c", "PENDING")])
    assert len(search.study.trials) == 3  # nothing settled twice


def test_the_watchdog_ends_a_sweep_that_idles(tmp_path, capsys):
    from sweep.search import Watchdog

    now = [0.0]
    search = _searcher(tmp_path, EpochBudget(8, 4))
    dog = Watchdog(search, idle_s=60, clock=lambda: now[0])
    dog.on_step_end(0, [_Trial("x", "RUNNING")])
    now[0] = 100.0
    dog.on_step_end(1, [_Trial("x", "RUNNING")])
    assert not dog.stop_all()  # something runs: not idle
    dog.on_step_end(2, [])
    now[0] = 159.0
    dog.on_step_end(3, [])
    assert not dog.stop_all()
    now[0] = 160.0
    dog.on_step_end(4, [])
    assert dog.stop_all() and not dog("x", {})
    assert "nothing has run for 60 s and the searcher proposes nothing (8 of 8 trial-epochs left)" in capsys.readouterr().out


def test_the_watchdog_waits_while_the_budget_is_spent(tmp_path):
    """Nothing running and nothing affordable is the end of the search, not a stall."""
    from sweep.search import Watchdog

    now = [0.0]
    search = _searcher(tmp_path, EpochBudget(4, 4))
    search.suggest("a")
    search.on_trial_complete("a", {keys.OBJECTIVE: 0.5, keys.EPOCH: 4, keys.STATUS: "finished"})
    dog = Watchdog(search, idle_s=1, clock=lambda: now[0])
    for now[0] in (0.0, 10.0, 20.0):
        dog.on_step_end(0, [_Trial("a", "TERMINATED", {keys.EPOCH: 4})])
    assert not dog.stop_all()


def test_the_eta_counts_the_budget_left():
    from sweep.trial import SweepContext
    from sweep.engine.progress import TrialProgress

    b = EpochBudget(total=10, per_trial=4)
    b.start("a")
    b.result("a", 2)
    progress = TrialProgress(SweepContext("s", "", "", "", {}, None, None, 1), epochs=4, total=40, budget=b)
    progress.epoch_s = [10.0]  # one epoch measured between two results: 10 s per epoch
    progress.last = {"a": {keys.EPOCH: 2}}
    eta = progress._eta([_Trial("a", "RUNNING")])
    # n_trials alone: 2 + 39 x 4 = 158 epochs left; the budget: 10 - 2 = 8 -> 80 s.
    assert eta == ", ETA ~1 min 20 s"
