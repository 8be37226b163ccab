"""The trial record and its one writer: tags a trial run carries, checkpoint pointer, big batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from sweep import tracking
from sweep.record import LOSS_NAMES, Role, Status, Tag, TrialRecord
from trainer.config import LossConfig


def test_every_loss_kind_has_display_names():
    assert list(LOSS_NAMES) and set(LOSS_NAMES) == set(LossConfig.model_fields["kind"].annotation.__args__)


def test_record_takes_the_statuses_as_plain_words_and_rejects_others():
    record = TrialRecord(run_id="r", run_name="sm λ=1e-03 μ=1e-04 s0", status="diverged")
    assert record.status is Status.DIVERGED and record.status == "diverged"
    with pytest.raises(ValidationError):
        TrialRecord(run_id="r", run_name="x", status="exploded")


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str, str]:
    mc = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(mc, "e", (tmp_path / "artifacts").as_uri())
    parent = tracking.start_parent(mc, exp, "s", {"a": 1}, _file(tmp_path / "sweep.yaml"))
    return mc, exp, parent


def _file(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_a_trial_run_carries_its_record_and_a_resume_continues_it(store, tmp_path):
    mc, exp, parent = store
    uri = mc.tracking_uri
    run = tracking.TrialRun(uri, exp, parent, "s", key="k1")
    # More params and metrics than one MLflow request takes (100 / 1000): log_batch splits them.
    run_id = run.open("sm λ=1e-03 s0", "t1", {f"p{i}": i for i in range(250)}, judge="judge-run")
    run.log_metrics({f"m{i}": float(i) for i in range(1500)}, step=1)
    last, best = _file(tmp_path / "last.pt"), _file(tmp_path / "best.pt")
    run.log_checkpoint(last)
    assert mc.get_run(run_id).data.tags[Tag.CHECKPOINT] == "checkpoints/last.pt"  # no best yet
    run.log_checkpoint(last)
    run.log_checkpoint(best, best_objective=0.25)
    run.log_checkpoint(last)  # a later last.pt does not hide the best
    data = mc.get_run(run_id).data
    assert len(data.params) == 250 and len(data.metrics) == 1500
    assert data.tags[Tag.CHECKPOINT] == "checkpoints/best.pt" and float(data.tags[Tag.BEST_OBJECTIVE]) == 0.25
    assert (data.tags[Tag.STATUS], data.tags[Tag.ATTEMPTS], data.tags[Tag.JUDGE]) == ("running", "1", "judge-run")
    assert (data.tags[Tag.ROLE], data.tags[Tag.PARENT], data.tags[Tag.KEY]) == (Role.TRIAL, parent, "k1")
    run.end(Status.FAILED)
    assert mc.get_run(run_id).info.status == "FAILED"

    again = tracking.TrialRun(uri, exp, parent, "s", key="k1")
    assert again.open("sm λ=1e-03 s0", "t2", {}) == run_id  # the same run, a second attempt
    again.log_checkpoint(last)
    again.end(Status.FINISHED)
    run = mc.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags[Tag.STATUS], run.data.tags[Tag.ATTEMPTS], run.data.tags[Tag.TRIAL_ID]) == ("finished", "2", "t2")
    assert run.data.tags[Tag.CHECKPOINT] == "checkpoints/best.pt"


def test_settle_trials_closes_runs_with_tunes_final_word(store):
    mc, exp, parent = store
    ids = []
    for i in range(3):
        run = tracking.TrialRun(mc.tracking_uri, exp, parent, "s", key=f"k{i}")
        ids.append(run.open(f"p{i}", f"t{i}", {}))
    tracking.settle_trials(mc, exp, parent, {"t0": Status.STOPPED, "t1": Status.FAILED})
    runs = [mc.get_run(i) for i in ids]
    assert [r.data.tags[Tag.STATUS] for r in runs] == ["stopped", "failed", "running"]
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED", "RUNNING"]
    tracking.finish_parent(mc, parent, trials=3, failed=1)
    tags = mc.get_run(parent).data.tags
    assert (tags[Tag.TRIALS], tags[Tag.FAILED_TRIALS], mc.get_run(parent).info.status) == ("3", "1", "FINISHED")


def test_the_runs_table_shows_each_number_with_its_interval_in_three_decimals(store):
    """The view's text tags: what the MLflow runs table shows instead of cut or raw-precision metrics."""
    from sweep.points import Point, apply_point, weight_tags
    from sweep.record import ViewTag
    from trainer import keys

    mc, exp, parent = store
    cfg = apply_point({"loss": {"kind": "score_matching"}}, Point((("loss.lam", 3.1622776601683794e-4), ("loss.mu", 1e-4)), 0))
    run = tracking.TrialRun(mc.tracking_uri, exp, parent, "s", "k1")
    run_id = run.open("sm λ3.16e-4 μ1e-4 s0", "t0", {"a": 1}, shown=weight_tags(cfg))
    run.log_metrics({keys.OBJECTIVE: 0.7, keys.lo_key(keys.OBJECTIVE): 0.651, keys.hi_key(keys.OBJECTIVE): 0.745,
                     keys.VAL_ACC: 0.6328125, keys.lo_key(keys.VAL_ACC): 0.5, keys.hi_key(keys.VAL_ACC): 0.75,
                     keys.TEST_ACC: 0.8025173611111112}, step=1)  # a test accuracy without its interval
    tags = mc.get_run(run_id).data.tags
    assert tags[ViewTag.OBJECTIVE] == "0.700 [0.651, 0.745]" and tags[ViewTag.VAL_ACC] == "0.633 [0.500, 0.750]"
    assert tags[ViewTag.TEST_ACC] == "0.803" and ViewTag.GAN_TEST not in tags and ViewTag.CONFIRMED not in tags
    assert (tags[ViewTag.LAM], tags[ViewTag.MU]) == ("3.16e-4", "1e-4")
    tracking.log_confirmation(mc, run_id, {keys.CONFIRM_OBJECTIVE: 0.889, keys.lo_key(keys.CONFIRM_OBJECTIVE): 0.827,
                                           keys.hi_key(keys.CONFIRM_OBJECTIVE): 0.93}, {})
    assert mc.get_run(run_id).data.tags[ViewTag.CONFIRMED] == "0.889 [0.827, 0.930]"
    # Retrained with more seeds: the mean over the seeds is what the sweep reports, and what the table shows.
    seeds = keys.CONFIRM_OBJECTIVE_SEEDS
    tracking.log_confirmation(mc, run_id, {seeds: 0.8, keys.lo_key(seeds): 0.75, keys.hi_key(seeds): 0.85}, {})
    assert mc.get_run(run_id).data.tags[ViewTag.CONFIRMED] == "0.800 [0.750, 0.850]"
    baseline = apply_point({"loss": {"kind": "score_matching"}}, Point((("loss.preset", "baseline"),), 0))
    assert weight_tags(baseline) == {ViewTag.LAM: "-", ViewTag.MU: "-"}  # the baseline has neither weight
    # The view shows these tags, and no metric or param column.
    from sweep.runs_view import view_state

    assert all(c.startswith("tags.") for c in view_state()["selectedColumns"])


def test_one_rule_decides_a_trials_final_status():
    from sweep.record import final_status

    assert final_status("finished") == "finished" and final_status("diverged") == "diverged"
    assert final_status("running") == "stopped"  # ended before its last epoch: the scheduler stopped it
    assert final_status(None) == "stopped"  # never reported
    assert final_status("finished", errored=True) == "failed"  # it raised for good, whatever it said before
