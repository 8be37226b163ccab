"""End-to-end grid sweep against a real MLflow server: runs, tags, metrics, artifacts, divergence."""

from __future__ import annotations

import mlflow
import pytest

from helpers import child_runs, run_sweep
from trainer import keys


def test_grid_sweep_tracks_one_parent_and_one_child_per_point(tiny_sweep):
    assert tiny_sweep.exit_code == 0  # a diverged point does not fail the sweep
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    parent = mc.get_run(tiny_sweep.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.role"] == "parent"
    assert parent.data.tags["sweep.name"] == tiny_sweep.name
    assert len(parent.data.tags["git.commit"]) >= 7
    assert parent.data.params["trainer.model.arch"] == "resnet9"
    assert "sweep.yaml" in [a.path for a in mc.list_artifacts(parent.info.run_id)]
    exp = mc.get_experiment_by_name(tiny_sweep.experiment)
    parents = mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")
    assert len(parents) == 1

    children = child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(
        ["sm λ1e-3 μ1e-4 s0", "sm λ1e-4 μ1e-4 s0", "base s0", "base optim.lr=1e12 s0"]
    )
    assert len({r.data.tags["trial.key"] for r in children}) == tiny_sweep.points
    for run in children:
        assert run.data.tags["sweep.role"] == "trial"
        assert run.data.tags["trial.point"] == run.info.run_name
        assert run.data.tags["trial.id"]
        assert run.data.params["seed"] == "0"
        assert run.data.params["data.dataset"] == "digits"


def test_finished_trials_have_per_epoch_metrics_and_artifacts(tiny_sweep):
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    finished = [
        r
        for r in child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
        if r.data.tags["trial.status"] == "finished"
    ]
    assert len(finished) == 3
    for run in finished:
        assert run.info.status == "FINISHED"
        # Each reported number's 95 % interval at the same steps as the number.
        bounds = [end(k) for k in (keys.TEST_ACC, keys.VAL_ACC, keys.GAN_TEST, keys.OBJECTIVE)
                  for end in (keys.lo_key, keys.hi_key)]
        for key in (keys.TEST_ACC, keys.GAN_TEST, keys.OBJECTIVE, keys.TRAIN_LOSS, *bounds):
            steps = sorted(m.step for m in mc.get_metric_history(run.info.run_id, key))
            assert steps == [1, 2], (run.info.run_name, key, steps)  # eval every epoch, step = epoch
        m = run.data.metrics
        # The objective selects on the validation split, never on the test set.
        assert m[keys.OBJECTIVE] == pytest.approx(0.5 * m[keys.VAL_ACC] + 0.5 * m[keys.GAN_TEST])
        assert run.data.tags["trial.selection_split"] == "val"
        files = {a.path for a in mc.list_artifacts(run.info.run_id, "checkpoints")}
        assert files == {"checkpoints/last.pt", "checkpoints/best.pt"}
        images = {a.path for a in mc.list_artifacts(run.info.run_id, "images")}
        assert {"images/samples.png", "images/saliency.png"} <= images
        assert [a.path for a in mc.list_artifacts(run.info.run_id, "curves")]
        assert run.data.tags["trial.attempts"] == "1"
        # The record points at the best checkpoint and says which judge scored the trial.
        assert run.data.tags["trial.checkpoint"] == "checkpoints/best.pt"
        objective = [m.value for m in mc.get_metric_history(run.info.run_id, keys.OBJECTIVE)]
        assert float(run.data.tags["trial.best_objective"]) == pytest.approx(max(objective))
        judge = mc.get_run(run.data.tags["trial.judge"])
        assert "judge.pt" in [a.path for a in mc.list_artifacts(judge.info.run_id)]
        assert run.data.tags["judge.key"] == judge.data.tags["judge.key"]
        assert run.data.tags["judge.arch"] == judge.data.params["arch"] == "vgg11"  # 8 px digits
    sm = [r for r in finished if r.info.run_name.startswith("sm")]
    assert {r.data.params["loss.lam"] for r in sm} == {"0.001", "0.0001"}
    assert {r.data.params["loss.kind"] for r in sm} == {"score_matching"}
    # Artifacts went through the server into its artifact root, not into a local ./mlruns.
    assert list((tiny_sweep.storage_path.parent).glob("mlruns")) == []


def test_diverging_point_ends_diverged_with_the_worst_objective(tiny_sweep):
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    runs = child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
    (bad,) = [r for r in runs if r.info.run_name == "base optim.lr=1e12 s0"]
    assert bad.data.tags["trial.status"] == "diverged"
    assert bad.data.metrics[keys.OBJECTIVE] == 0.0
    assert bad.info.status == "FAILED"  # the MLflow UI shows it as not a success
    assert mc.get_metric_history(bad.info.run_id, keys.TEST_ACC) == []  # it stopped before evaluating


def test_existing_sweep_name_without_resume_is_refused(tiny_sweep, capsys):
    before = child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
    code = run_sweep(
        ["--name", tiny_sweep.name, "--set", f"tracking.uri={tiny_sweep.tracking_uri}",
         "--set", f"storage_path={tiny_sweep.storage_path}", "--set", f"experiment={tiny_sweep.experiment}"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err
    after = child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
    assert len(after) == len(before)


def test_parent_run_carries_the_sweeps_summary(tiny_sweep):
    mc = mlflow.MlflowClient(tiny_sweep.tracking_uri)
    parent = mc.get_run(tiny_sweep.parent_run_id)
    children = child_runs(tiny_sweep.tracking_uri, tiny_sweep.experiment, tiny_sweep.parent_run_id)
    finished = [r for r in children if r.data.tags["trial.status"] == "finished"]
    best = max(finished, key=lambda r: r.data.metrics[keys.OBJECTIVE])
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["sweep.best_point"] == best.info.run_name and tags["sweep.best_run"] == best.info.run_id
    # What selected, labelled so; what is reported, the confirmed numbers (sweep.confirm) with intervals.
    assert metrics["best/selection_objective"] == pytest.approx(best.data.metrics[keys.OBJECTIVE])
    assert metrics["best/selection_test_acc"] == pytest.approx(best.data.metrics[keys.TEST_ACC])
    assert metrics["best/selection_gan_test"] == pytest.approx(best.data.metrics[keys.GAN_TEST])
    for short, key in (("objective", keys.CONFIRM_OBJECTIVE), ("test_acc", keys.CONFIRM_TEST_ACC),
                       ("gan_test", keys.CONFIRM_GAN_TEST)):  # fmt: skip
        assert metrics[f"best/{short}"] == pytest.approx(best.data.metrics[key])
        assert metrics[f"best/{short}_lo"] <= metrics[f"best/{short}"] <= metrics[f"best/{short}_hi"]
    assert {k: metrics[f"trials/{k}"] for k in ("finished", "diverged", "stopped", "failed")} == {
        "finished": 3, "diverged": 1, "stopped": 0, "failed": 0}  # fmt: skip
    assert tags["sweep.interrupted"] == "false"
    assert best.info.run_name in tags["mlflow.note.content"] and "1 diverged" in tags["mlflow.note.content"]


def test_summary_is_sorted_by_objective_and_names_best_diverged_and_stopped(capsys):
    from sweep.record import Status
    from sweep.report import Outcome, print_summary

    def row(point, status, objective=None, epoch=4, evaluated=True):
        m = {"point": point, keys.EPOCH: epoch, keys.OBJECTIVE: 0.0 if objective is None else objective}
        if evaluated:
            m.update({keys.TEST_ACC: 0.5, keys.GAN_TEST: 0.5})
        return {"trial_id": point, "metrics": m, "status": status, "error": None}

    print_summary(Outcome([
        row("a s0", Status.FINISHED, 0.4), row("b s0", Status.DIVERGED, 0.0, 1, False),
        {**row("c s0", Status.FINISHED, 0.9), "metrics": {**row("c s0", Status.FINISHED, 0.9)["metrics"],
         keys.lo_key(keys.OBJECTIVE): 0.85, keys.hi_key(keys.OBJECTIVE): 0.93,
         keys.lo_key(keys.GAN_TEST): 0.41, keys.hi_key(keys.GAN_TEST): 0.59}},
        row("d s0", Status.STOPPED, None, 1, False),
        row("e s0", Status.STOPPED, 0.95, 2),  # stopped early: shown, but not the best point
        {"trial_id": "f", "status": Status.STOPPED, "error": None,  # accuracy logged, no evaluation yet
         "metrics": {"point": "f s0", keys.EPOCH: 1, keys.TEST_ACC: 0.3, keys.OBJECTIVE: 0.0}},
    ]))  # fmt: skip
    out = capsys.readouterr().out
    lines = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "status" not in line]
    assert lines == ["e", "c", "a", "b", "d", "f"]  # best objective first, never-evaluated last
    assert "Best point: c s0, selection objective 0.900 (the draw that chose it; not confirmed" in out
    assert "Diverged: b s0" in out and "Stopped: d s0, e s0, f s0" in out
    # One seed per point and nothing measured the training seed's noise: the table says what its intervals cover.
    assert "These intervals cover the evaluation's noise only (one training seed per point)" in out
    c_line = next(line for line in out.splitlines() if line.startswith("  c s0"))
    assert c_line.endswith("0.500 [0.410, 0.590]  0.900 [0.850, 0.930]")  # GAN-test and objective intervals
    for name in ("d s0", "f s0"):
        line = next(line for line in out.splitlines() if line.startswith(f"  {name}"))
        assert line.split()[-1] == "-"  # no evaluation yet: no objective, not 0
