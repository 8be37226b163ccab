"""``--resume`` with a config other than the one the sweep started with is refused before Ray
starts (exit 2, each changed key with its old and new value, no run touched); the unchanged
config passes the same check after a round trip through MLflow."""

from __future__ import annotations

import time

import pytest

from helpers import run_sweep
from sweep import preflight, tracking
from sweep.config_files import load_sweep_config
from trainer.config import flatten

NAME = "changed"


def _sets(tmp_path, *extra: str) -> list[str]:
    sets = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"storage_path={tmp_path / 'ray'}",
            "experiment=resume-config", "trainer.epochs=6", *extra]  # fmt: skip
    return sum((["--set", s] for s in sets), [])


def _started(tmp_path, *extra: str) -> tuple[object, str]:
    """A sweep whose parent run exists (as after a Ctrl-C before Tune saved state): its client and parent id."""
    cfg = load_sweep_config("quickstart", [a for a in _sets(tmp_path, *extra) if a != "--set"], name=NAME)
    mc = tracking.client(cfg.tracking.uri)
    _, parent = tracking.open_parent(mc, cfg.experiment_name, (tmp_path / "art").as_uri(), NAME,
                                     cfg.model_dump(mode="json"), None)  # fmt: skip
    tracking.interrupt_parent(mc, mc.get_run(parent).info.experiment_id, parent, "interrupted")
    return mc, parent


def test_config_changes_names_each_key_with_old_and_new_value_and_skips_resumable_ones():
    stored = {"trainer.epochs": "6", "search.grid.loss.lam": "[0.001]", "tracking.uri": "sqlite:///a.db",
              "gone": "1"}  # fmt: skip
    current = {"trainer.epochs": 3, "search.grid.loss.lam": [0.001], "tracking.uri": "sqlite:///b.db", "new": True}
    assert preflight.config_changes(stored, current) == [
        "gone: 1 -> (not recorded)", "new: (not recorded) -> True", "trainer.epochs: 6 -> 3"]  # fmt: skip
    # A setting added to the schema after the sweep started is no change at its default, only when set.
    assert preflight.config_changes({}, {"trial_timeout": None}) == []
    assert preflight.config_changes({}, {"trial_timeout": 60.0}) == ["trial_timeout: (not recorded) -> 60.0"]


@pytest.mark.parametrize(
    "change, words",
    [
        ("trainer.epochs=3", ["trainer.epochs: 6 -> 3"]),
        ("search.grid.loss.lam=[1.0e-3, 1.0e-2]", ["search.grid.loss.lam: [0.01, 0.001, 0.0001] -> [0.001, 0.01]"]),
    ],
    ids=["epochs", "grid"],
)
def test_resume_with_a_changed_config_exits_2_naming_the_key_and_touches_nothing(change, words, tmp_path, capsys,
                                                                                 monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    mc, parent = _started(tmp_path)
    before = mc.get_run(parent)
    started = time.time()
    code = run_sweep(["--name", NAME, "--resume", *_sets(tmp_path, change)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert time.time() - started < 30  # refused before Ray starts
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "--resume" in line and parent in line
    for word in words:
        assert word in line, line
    after = mc.get_run(parent)
    assert after.info.status == before.info.status == "KILLED" and after.data.params == before.data.params
    assert not (tmp_path / "ray").exists()  # Ray never started, no lock or state written


def test_the_unchanged_config_passes_after_a_round_trip_through_mlflow(tmp_path):
    mc, parent = _started(tmp_path, "search.grid.data.data_dir=[\"/tmp/it's \\\\ é\"]")
    cfg = load_sweep_config("quickstart", [a for a in _sets(tmp_path, "search.grid.data.data_dir=[\"/tmp/it's \\\\ é\"]")
                                           if a != "--set"], name=NAME)  # fmt: skip
    stored = tracking.stored_config(mc, parent)
    assert stored and preflight.config_changes(stored, flatten(cfg.model_dump(mode="json"))) == []
    preflight.check_resume_config(NAME, parent, stored, flatten(cfg.model_dump(mode="json")))
    # the store moved (another tracking URI) is not a change that refuses
    moved = {**flatten(cfg.model_dump(mode="json")), "tracking.uri": "http://elsewhere:5000"}
    preflight.check_resume_config(NAME, parent, stored, moved)


@pytest.mark.slow  # two driver starts, each starting a local Ray before its judge stage fails
def test_a_first_attempt_that_failed_before_any_trial_leaves_the_name_free(ray_cluster, tmp_path, capsys, monkeypatch):
    """E.g. CIFAR's download failing offline in the judge stage: the plain rerun is not refused
    as "already exists", it meets the same cause again."""
    from sweep import judge_stage

    def offline(*args, **kwargs):
        raise RuntimeError("offline: cannot download the dataset")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(judge_stage, "train_and_log", offline)
    args = ["--name", "first", *_sets(tmp_path, "trainer.data.train_size=256")]
    for attempt in range(2):
        with pytest.raises(RuntimeError, match="offline"):
            run_sweep(args)
        err = capsys.readouterr().err
        assert "failed before any trial ran and kept nothing" in err and "already exists" not in err, err
    assert not (tmp_path / "ray" / "first").exists()


def test_a_resume_may_change_confirm_settings_and_a_changed_sample_count_is_measured_again(tmp_path):
    # The confirmation runs after every trial and selects nothing: a sweep whose confirmation could
    # not run (confirm.samples too large for the machine) must be able to finish with a smaller one.
    mc, parent = _started(tmp_path)
    stored = tracking.stored_config(mc, parent)
    for change in ("confirm.samples=512", "confirm.top_k=2", "confirm.sample_seed=7", "confirm.enabled=false"):
        cfg = load_sweep_config("quickstart", [a for a in _sets(tmp_path, change) if a != "--set"], name=NAME)
        preflight.check_resume_config(NAME, parent, stored, flatten(cfg.model_dump(mode="json")))
    # A finalist measured on 256 samples is reused as long as the count asked for is the same.
    from types import SimpleNamespace

    from sweep import finalists
    from sweep.record import Tag
    from trainer import keys

    run = SimpleNamespace(data=SimpleNamespace(
        tags={Tag.CONFIRM_SAMPLE_SEED: "100000", Tag.CONFIRM_SAMPLES: "256", Tag.CONFIRM_TEST_IMAGES: "360"},
        metrics={keys.CONFIRM_TEST_ACC: 0.9, keys.CONFIRM_GAN_TEST: 0.5}))  # fmt: skip
    finalist = SimpleNamespace(point="p")
    assert finalists.reused(run, finalist, 100000, None) is not None  # the default count: as measured
    assert finalists.reused(run, finalist, 100000, 256) is not None
    assert finalists.reused(run, finalist, 100000, 512) is None  # measured again
    assert finalists.reused(run, finalist, 7, 256) is None  # another seed, as before
