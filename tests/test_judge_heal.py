"""The judge stage heals a lost or corrupt judge: its weights are checked against the sha256
tagged when it was trained, a judge that fails the check is retrained once (its run marked
FAILED), concurrent sweeps train one judge once, and no download leaves a folder behind."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers import TINY
from sweep import judge_runs, judge_stage, tracking
from sweep.config_files import load_sweep_config
from sweep.record import JUDGE_FILE, JUDGES_EXPERIMENT, Tag


@pytest.fixture()
def judged(tmp_path, monkeypatch):
    """A sweep config with a tiny judge, a sqlite store, and the node cache in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(judge_stage, "CACHE", tmp_path / "cache")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_sweep_config("quickstart", [*TINY, f"tracking.uri={uri}"])
    return cfg, uri, (tmp_path / "artifacts").as_uri()


def _stored(mc, run_id: str) -> Path:
    return Path(unquote(urlparse(mc.get_run(run_id).info.artifact_uri).path)) / JUDGE_FILE


def _judges(mc) -> list:
    exp = mc.get_experiment_by_name(JUDGES_EXPERIMENT)
    return mc.search_runs([exp.experiment_id])


@pytest.mark.parametrize("damage", ["overwritten", "deleted"])
def test_a_judge_lost_or_corrupt_in_the_store_and_cache_is_retrained_once(judged, damage, capsys):
    cfg, uri, root = judged
    mc = tracking.client(uri)
    first = judge_stage.ensure_judge(cfg, uri, root)
    stored = _stored(mc, first)
    assert mc.get_run(first).data.tags[Tag.JUDGE_SHA256] == judge_runs.sha256(stored)  # tagged when trained
    cached = judge_stage.fetch_judge(uri, first)
    for path in (stored, cached):
        if damage == "deleted":
            path.unlink()
        else:
            path.write_bytes(b"not a judge")
    capsys.readouterr()
    second = judge_stage.ensure_judge(cfg, uri, root)
    out = capsys.readouterr().out
    assert second != first and f"run {first} is unusable" in out and "training the judge again" in out
    assert mc.get_run(first).info.status == "FAILED" and mc.get_run(second).info.status == "FINISHED"
    assert judge_runs.sha256(judge_stage.fetch_judge(uri, second)) == mc.get_run(second).data.tags[Tag.JUDGE_SHA256]
    # healed: the next sweep finds the new judge and trains nothing
    assert judge_stage.ensure_judge(cfg, uri, root) == second and "found in MLflow" in capsys.readouterr().out
    assert len(_judges(mc)) == 2
    assert not list((judge_stage.CACHE).glob("dl-*"))  # every download cleaned its staging folder


def test_a_corrupt_cached_copy_is_downloaded_again_and_a_bad_store_copy_raises(judged):
    cfg, uri, root = judged
    mc = tracking.client(uri)
    run_id = judge_stage.ensure_judge(cfg, uri, root)
    cached = judge_stage.fetch_judge(uri, run_id)
    cached.write_bytes(b"garbage")
    assert judge_runs.sha256(judge_stage.fetch_judge(uri, run_id)) == judge_runs.sha256(_stored(mc, run_id))
    _stored(mc, run_id).write_bytes(b"garbage")
    cached.unlink()
    with pytest.raises(judge_stage.JudgeUnusable, match="sha256"):
        judge_stage.fetch_judge(uri, run_id)
    assert not list(judge_stage.CACHE.glob("dl-*"))


def test_two_sweeps_starting_at_once_train_one_judge_once(judged, monkeypatch):
    cfg, uri, root = judged
    trained = []
    real = judge_stage.train_and_log

    def counting(*args, **kwargs):
        trained.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(judge_stage, "train_and_log", counting)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(judge_stage.ensure_judge(cfg, uri, root)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2 and results[0] == results[1] and len(trained) == 1
    assert len(_judges(tracking.client(uri))) == 1


def test_the_judge_trains_with_the_trials_thread_count_whatever_the_drivers(judged, tmp_path):
    """On CPU a judge's weights depend on torch's thread count; trained at the trials' count, the
    same key gives the same judge on a driver with any setting (naive reference: the same config
    trained directly at that count)."""
    import torch

    from sweep.config import judge_config
    from trainer.checkpoint import read_judge
    from trainer.judge import train_judge

    cfg, uri, root = judged
    jc = judge_config(cfg)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run_id = judge_stage.train_and_log(jc, uri, root, "cpu", threads=1)
        assert torch.get_num_threads() == 2  # the driver's own setting is back
        torch.set_num_threads(1)
        direct = train_judge(jc, tmp_path / "direct", device="cpu")
    finally:
        torch.set_num_threads(previous)
    stored = read_judge(_stored(tracking.client(uri), run_id))["state_dict"]
    reference = read_judge(direct)["state_dict"]
    assert stored.keys() == reference.keys()
    assert all(torch.equal(stored[k], reference[k]) for k in stored)
