"""Warm start: an Optuna sweep learns from an earlier sweep's finished and diverged trials.

The earlier sweeps are written with sweep.tracking exactly as a sweep writes its trials (a parent
run, child runs with the trainer config as params, per-epoch metrics, a final status), so the test
controls which trials finished, diverged, stopped or failed without paying for them.
"""

from __future__ import annotations

import mlflow
import optuna
import pytest

from helpers import TINY, child_runs, run_sweep
from sweep import tracking, warmstart
from sweep.config_files import load_sweep_config
from sweep.points import Point, apply_point
from sweep.record import Status, Tag
from trainer import keys
from trainer.config import flatten

EXPERIMENT = "warm-test"
SEARCH = [
    *TINY, "trainer.epochs=1", "search.method=optuna", "experiment=" + EXPERIMENT,
    "search.space.loss.lam={low: 1.0e-6, high: 1.0e-2}", "search.space.loss.mu={low: 1.0e-5, high: 1.0e-2}",
    "search.grid.loss.lam=[1.0e-3, 1.0e-4]", "search.grid.loss.mu=[1.0e-4]",  # 1e-3 is a warm point: skipped
]  # fmt: skip
# What the sweeps of this module do not read: no confirmation stage, no Table 2 / Pareto at the end.
UNREAD = ["confirm.enabled=false", "analysis=false"]
# (λ, μ, status, accuracy, GAN-test) of the earlier sweep's trials; the objective is 0.5·acc + 0.5·gan.
SOURCE = [
    (1e-3, 1e-4, Status.FINISHED, 0.6, 0.4),
    (3e-3, 1e-3, Status.FINISHED, 0.7, 0.2),
    (1e-2, 1e-2, Status.DIVERGED, None, None),
    (1e-5, 1e-4, Status.STOPPED, 0.3, 0.3),  # stopped by the scheduler at epoch 1: enters as PRUNED
    (2e-5, 2e-4, Status.FAILED, None, None),  # left out
]


def _write_sweep(uri: str, name: str, rows, extra_sets: tuple[str, ...] = ()) -> dict[tuple[float, float], str]:
    """An earlier sweep in the sweep's MLflow layout; returns (λ, μ) -> run id."""
    cfg = load_sweep_config("quickstart", [*SEARCH, *extra_sets], name)
    mc = tracking.client(uri)
    exp_id, parent = tracking.open_parent(mc, EXPERIMENT, None, name, cfg.model_dump(mode="json"), None)
    ids = {}
    for i, (lam, mu, status, acc, gan) in enumerate(rows):
        point = Point((("loss.lam", lam), ("loss.mu", mu)) if lam is not None else (("loss.preset", "baseline"),), 0)
        trial = tracking.TrialRun(uri, exp_id, parent, name, point.key)
        params = flatten(apply_point(cfg.trainer.model_dump(), point))
        ids[(lam, mu)] = trial.open(f"sm {i}", f"t{i}", params, selection_split=cfg.objective.split)
        metrics = {keys.EPOCH: 1}
        if acc is not None:  # validation and test accuracy alike, so the test holds whichever selects
            metrics.update({keys.TEST_ACC: acc, keys.VAL_ACC: acc, keys.GAN_TEST: gan,
                            keys.OBJECTIVE: 0.5 * acc + 0.5 * gan})
        trial.log_metrics(metrics, step=1)
        trial.end(status)
    tracking.finish_parent(mc, parent, trials=len(rows), failed=0)
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite MLflow store for the tests that write earlier sweeps but run no trial (each its
    own sweep names): cheaper than starting the session's MLflow server for them."""
    return f"sqlite:///{tmp_path_factory.mktemp('warm-store') / 'mlflow.db'}"


def _sweep(uri: str, storage, name: str, warm: str, *extra: str) -> int:
    sets = [*SEARCH, *UNREAD, f"tracking.uri={uri}", f"storage_path={storage}", "search.n_trials=2",
            f"search.warm_start=[{warm}]"]
    return run_sweep(["--name", name, *sum((["--set", s] for s in sets), []), *extra])


def _study(storage, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage / (name + '-optuna.db')}")


@pytest.mark.slow  # two driver starts of a 2-trial Optuna sweep (each starts a local Ray)
def test_warm_start_adds_finished_and_diverged_trials_once_and_reruns_none(ray_cluster, mlflow_server, tmp_path):
    uri = mlflow_server.uri
    ids = _write_sweep(uri, "src", SOURCE)
    entered = {ids[(lam, mu)]: (lam, mu, status, acc, gan) for lam, mu, status, acc, gan in SOURCE
               if status in (Status.FINISHED, Status.DIVERGED, Status.STOPPED)}

    assert _sweep(uri, tmp_path, "warm", "src") == 0
    study = _study(tmp_path, "warm")
    warm = {t.user_attrs[warmstart.SOURCE_ATTR]: t for t in study.trials if warmstart.SOURCE_ATTR in t.user_attrs}
    assert set(warm) == set(entered)  # exactly the finished, diverged and stopped runs
    for run_id, (lam, mu, status, acc, gan) in entered.items():
        t = warm[run_id]
        if status == Status.STOPPED:  # as the searcher tells Optuna of a trial ASHA stopped
            assert t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values == {1: 0.5 * acc + 0.5 * gan}
            continue
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.params == pytest.approx({"loss.lam": lam, "loss.mu": mu})
        assert t.value == pytest.approx(0.0 if status == Status.DIVERGED else 0.5 * acc + 0.5 * gan)
        assert t.user_attrs["warm_start.status"] == status
    # The new sweep ran its own 2 trials, none of them at a warm point.
    mc = mlflow.MlflowClient(uri)
    parent = tracking.find_parent(mc, EXPERIMENT, "warm")
    runs = child_runs(uri, EXPERIMENT, parent)
    assert len(runs) == 2
    ran = [(float(r.data.params["loss.lam"]), float(r.data.params["loss.mu"])) for r in runs]
    assert (1e-4, 1e-4) in ran  # the grid point that is not a warm one still goes first
    for lam, mu in ran:
        assert not any(warmstart.same_point({"a": lam, "b": mu}, {"a": w[0], "b": w[1]}) for w in entered.values())
    complete = [e for e in entered.values() if e[2] != Status.STOPPED]
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == len(complete) + 2
    # The parent run says which runs it learned from; the earlier sweep still shows its diverged trial.
    assert set(mc.get_run(parent).data.tags[Tag.WARM_START].split(",")) == set(entered)
    source = child_runs(uri, EXPERIMENT, tracking.find_parent(mc, EXPERIMENT, "src"))
    assert sorted(r.data.tags[Tag.STATUS] for r in source) == sorted(s for _, _, s, _, _ in SOURCE)

    # Resumed: the warm trials are in the study already and are not added again.
    assert _sweep(uri, tmp_path, "warm", "src", "--resume") == 0
    study = _study(tmp_path, "warm")
    sources = [t.user_attrs[warmstart.SOURCE_ATTR] for t in study.trials if warmstart.SOURCE_ATTR in t.user_attrs]
    assert sorted(sources) == sorted(entered)
    assert len(child_runs(uri, EXPERIMENT, parent)) == 2  # and nothing ran again


def test_baseline_point_of_a_source_is_skipped_with_a_note(store, capsys):
    uri = store
    ids = _write_sweep(uri, "with-baseline", [SOURCE[0], (None, None, Status.FINISHED, 0.9, 0.1), SOURCE[3]])
    cfg = load_sweep_config("quickstart", [*SEARCH, f"tracking.uri={uri}", "search.warm_start=[with-baseline]"], "w")
    trials, left_out = warmstart.collect(cfg, uri)
    assert sorted(t.run_id for t in trials) == sorted([ids[(1e-3, 1e-4)], ids[(1e-5, 1e-4)]]) and left_out == 0
    stopped = next(t for t in trials if t.status == Status.STOPPED)
    assert stopped.epoch == 1 and stopped.values == [pytest.approx(0.3)]
    assert "skipped 1 trial(s) of sweep 'with-baseline' with another loss than score_matching" in capsys.readouterr().out


def test_seed_study_twice_adds_each_run_once(tmp_path):
    cfg = load_sweep_config("quickstart", SEARCH, "s")
    trials = [warmstart.WarmTrial("r1", "src", "finished", {"loss.lam": 1e-3, "loss.mu": 1e-4}, [0.5]),
              warmstart.WarmTrial("r2", "src", "diverged", {"loss.lam": 1e-2, "loss.mu": 1e-2}, [0.0])]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert warmstart.seed_study(cfg, "s", storage, trials) == 2
    assert warmstart.seed_study(cfg, "s", storage, trials) == 0
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.user_attrs[warmstart.SOURCE_ATTR], t.value) for t in study.trials] == [("r1", 0.5), ("r2", 0.0)]
    assert warmstart.known_points("s", storage) == [trials[0].params, trials[1].params]


@pytest.mark.parametrize("warm, extra, message", [
    ("bad-lr", ("trainer.optim.lr=0.5",), "was trained with optim.lr=0.5, this sweep with optim.lr=0.05"),
    ("bad-judge", ("judge.epochs=3",), "judged GAN-test with judge.epochs=3, this sweep with judge.epochs=1"),
    ("nope", None, "no sweep named 'nope'"),
    # A source that selected on test (the paper's setting) has objective values of another kind.
    ("on-test", ("trainer.data.val_size=0", "objective.split=test"), "selected on its test split, this sweep on val"),
])  # fmt: skip
def test_incompatible_sweep_is_refused_before_any_trial(store, tmp_path, capsys, warm, extra, message):
    uri = store
    if extra is not None:
        _write_sweep(uri, warm, SOURCE[:1], extra)
    name = f"warm-from-{warm}"
    assert _sweep(uri, tmp_path, name, warm) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sweep.run: error: search.warm_start: ") and message in err[0], err
    assert tracking.find_parent(mlflow.MlflowClient(uri), EXPERIMENT, name) is None  # nothing written
    assert not (tmp_path / name).exists() and not (tmp_path / f"{name}-optuna.db").exists()
