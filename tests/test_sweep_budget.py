"""The search's epoch budget (search.max_epochs_total) is never exceeded, with or without ASHA."""

from __future__ import annotations

import random

import mlflow
import optuna
import pytest

from helpers import TINY, child_runs, run_sweep
from sweep import tracking
from sweep.budget import EpochBudget
from sweep.loading import load_sweep_config
from trainer import keys
from trainer.config import ConfigError


def _searcher(tmp_path, budget: EpochBudget):
    from sweep.tune import ResumableOptunaSearch

    space = {"loss.lam": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}
    return ResumableOptunaSearch(space=space, metric=keys.OBJECTIVE, mode="max", study_name="s",
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


def test_sweep_stops_proposing_when_the_budget_is_spent(mlflow_server, tmp_path):
    """5 trials asked for, 2 epochs each, 5 trial-epochs: only 2 trials fit (4 epochs)."""
    uri = mlflow_server.uri
    sets = [*TINY, f"tracking.uri={uri}", f"storage_path={tmp_path}", "experiment=budget-test",
            "search.method=optuna", "search.n_trials=5", "search.max_epochs_total=5",
            "search.space.loss.lam={low: 1.0e-6, high: 1.0e-2}", "search.space.loss.mu={low: 1.0e-5, high: 1.0e-2}"]
    assert run_sweep(["--name", "budget", *sum((["--set", s] for s in sets), [])]) == 0
    parent = tracking.find_parent(mlflow.MlflowClient(uri), "budget-test", "budget")
    runs = child_runs(uri, "budget-test", parent)
    epochs = sum(int(r.data.metrics[keys.EPOCH]) for r in runs)
    assert len(runs) == 2 and epochs == 4
