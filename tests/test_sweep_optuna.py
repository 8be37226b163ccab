"""Optuna sweeps through Ray Tune: single objective and the [accuracy, GAN-test] front."""

from __future__ import annotations

import mlflow
import optuna
import pytest

from helpers import TINY, child_runs, run_sweep
from sweep import tracking
from trainer import keys


def test_the_searcher_is_a_tune_searcher_on_optunas_public_api(tmp_path):
    """No private attribute of Ray's or Optuna's: a Tune ``Searcher`` whose study is opened by name
    and whose pickled state (Tune's experiment state) holds no open study or live trial handle."""
    import pickle

    from ray.tune.search import Searcher

    from sweep.search import OptunaSearcher

    space = {"loss.lam": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = OptunaSearcher(space=space, metric=keys.OBJECTIVE, study_name="s", storage=storage)
    assert isinstance(search, Searcher)
    config = search.suggest("t1")
    copy = pickle.loads(pickle.dumps(search))
    assert copy.points == {"t1": config} and copy.study.study_name == "s" and not copy._live
    copy.on_trial_complete("t1", {keys.OBJECTIVE: 0.5, keys.EPOCH: 2, keys.STATUS: "finished"})
    # the copy has no handle of t1 (it was asked elsewhere) while the study still runs it: the
    # result enters as its own trial; the original, asked here, tells its trial
    search.on_trial_complete("t1", {keys.OBJECTIVE: 0.5, keys.EPOCH: 2, keys.STATUS: "finished"})
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2


def _optuna_sweep(uri: str, storage, name: str, trials: int, objectives: str) -> tuple[int, list, optuna.Study]:
    sets = [
        *TINY, f"tracking.uri={uri}", f"storage_path={storage}", "experiment=optuna-test",
        "trainer.epochs=1", "search.method=optuna", f"search.n_trials={trials}",
        "search.space.loss.lam={low: 1.0e-6, high: 1.0e-2}", "search.space.loss.mu={low: 1.0e-5, high: 1.0e-2}",
        "search.grid.loss.lam=[1.0e-3]", "search.grid.loss.mu=[1.0e-4]",  # evaluated first
        f"search.objectives={objectives}",
        "confirm.enabled=false", "analysis=false",  # not read here
    ]  # fmt: skip
    code = run_sweep(["--name", name, *sum((["--set", s] for s in sets), [])])
    parent = tracking.find_parent(mlflow.MlflowClient(uri), "optuna-test", name)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage / (name + '-optuna.db')}")
    return code, child_runs(uri, "optuna-test", parent), study


@pytest.mark.slow  # an Optuna sweep end to end (a local Ray, a judge, 2-3 trials)
@pytest.mark.parametrize(
    "objectives,trials", [("[eval/objective]", 3), ("[val/acc, eval/gan_test]", 2)], ids=["single", "multi"]
)
def test_optuna_sweep_tracks_each_proposal_and_feeds_the_study(ray_cluster, mlflow_server, tmp_path, objectives, trials):
    name = f"opt-{trials}"
    code, runs, study = _optuna_sweep(mlflow_server.uri, tmp_path, name, trials, objectives)
    assert code == 0
    assert len(runs) == trials
    lams = sorted(float(r.data.params["loss.lam"]) for r in runs)
    assert 1e-3 in lams  # the grid point seeded first
    for run in runs:
        assert 1e-6 <= float(run.data.params["loss.lam"]) <= 1e-2
        assert 1e-5 <= float(run.data.params["loss.mu"]) <= 1e-2
        assert run.data.tags["trial.status"] == "finished"
        assert run.info.run_name.startswith("sm λ") and run.info.run_name.endswith(" s0")
        assert keys.OBJECTIVE in run.data.metrics
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == trials
    n_values = len(objectives.split(","))
    assert len(study.directions) == n_values
    assert all(len(t.values) == n_values for t in complete)
    # Optuna saw what MLflow logged: the same accuracy for the same λ.
    by_lam = {round(float(r.data.params["loss.lam"]), 12): r.data.metrics for r in runs}
    for t in complete:
        logged = by_lam[round(t.params["loss.lam"], 12)]
        expected = [logged[keys.OBJECTIVE]] if n_values == 1 else [logged[keys.VAL_ACC], logged[keys.GAN_TEST]]
        assert t.values == pytest.approx(expected)


def test_resumed_trial_marked_failed_still_feeds_the_study(tmp_path):
    """After a kill, resume marks the Optuna trial failed; its Tune trial goes on and completes."""
    from sweep.search import OptunaSearcher, fail_stale_trials

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"loss.lam": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}
    search = OptunaSearcher(space=space, metric=keys.OBJECTIVE, study_name="s",
                            storage=optuna.storages.RDBStorage(storage))
    config = search.suggest("t1")
    search.on_trial_result("t1", {keys.OBJECTIVE: 0.2, "training_iteration": 1})
    assert fail_stale_trials("s", storage) == 1  # what --resume does before restoring
    search.on_trial_result("t1", {keys.OBJECTIVE: 0.3, "training_iteration": 2})  # no error
    search.on_trial_complete("t1", {keys.OBJECTIVE: 0.4, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=storage)
    states = [(t.state, t.value, t.params["loss.lam"]) for t in study.trials]
    assert states == [
        (optuna.trial.TrialState.FAIL, None, config["loss.lam"]),
        (optuna.trial.TrialState.COMPLETE, 0.4, config["loss.lam"]),
    ]
