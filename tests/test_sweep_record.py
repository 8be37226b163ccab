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
