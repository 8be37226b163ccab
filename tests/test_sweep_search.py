"""The searcher and Optuna: ASHA-stopped trials enter as PRUNED with their intermediate values,
finished ones as COMPLETE, and the samplers carry their options."""

from __future__ import annotations

import optuna
import pytest

from trainer import keys


def _searcher(tmp_path, **kwargs):
    from sweep.search import OptunaSearcher

    space = {"loss.lam": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    search = OptunaSearcher(space=space, metric=keys.OBJECTIVE, study_name="s",
                                   storage=optuna.storages.RDBStorage(storage), **kwargs)
    return search, storage


def _result(epoch: int, value: float, status: str = "running") -> dict:
    return {keys.OBJECTIVE: value, keys.EPOCH: epoch, keys.STATUS: status, "training_iteration": epoch}


def test_stopped_trial_is_pruned_with_its_intermediate_values(tmp_path):
    search, storage = _searcher(tmp_path)
    search.suggest("stopped")
    search.suggest("finished")
    search.on_trial_result("stopped", _result(1, 0.1))
    # ASHA's stop: Tune hands the stopping result to on_trial_complete only.
    search.on_trial_complete("stopped", _result(2, 0.3))
    for epoch in (1, 2, 3):
        search.on_trial_result("finished", _result(epoch, 0.2 * epoch, "finished" if epoch == 3 else "running"))
    search.on_trial_complete("finished", _result(3, 0.6, "finished"))
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert trials[0].intermediate_values == {1: 0.1, 2: 0.3}  # keyed by epoch
    assert trials[1].intermediate_values == pytest.approx({1: 0.2, 2: 0.4, 3: 0.6})
    assert trials[1].value == 0.6


def test_diverged_trial_is_complete_with_its_value(tmp_path):
    search, storage = _searcher(tmp_path)
    search.suggest("d")
    search.on_trial_complete("d", _result(1, 0.0, "diverged"))
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.0


def test_resumed_stopped_trial_reenters_as_pruned(tmp_path):
    from sweep.search import fail_stale_trials

    search, storage = _searcher(tmp_path)
    search.suggest("t1")
    search.on_trial_result("t1", _result(1, 0.2))
    fail_stale_trials("s", storage)
    search.on_trial_complete("t1", _result(2, 0.5))
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED]
    assert trials[1].intermediate_values == {1: 0.2, 2: 0.5}


def test_samplers_carry_their_options():
    from sweep.search import SAMPLERS

    tpe = SAMPLERS["tpe"](7, 5)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate and tpe._constant_liar and tpe._n_startup_trials == 5
    assert isinstance(SAMPLERS["random"](7, 5), optuna.samplers.RandomSampler)
    assert isinstance(SAMPLERS["nsga2"](7, 5), optuna.samplers.NSGAIISampler)
    from sweep.config import SearchConfig

    assert set(SAMPLERS) == set(SearchConfig.model_fields["sampler"].annotation.__args__)  # one name each
    qmc = SAMPLERS["qmc"](7, 5)
    assert isinstance(qmc, optuna.samplers.QMCSampler) and qmc._scramble and qmc._seed == 7

