"""What one trial hands on for people to read: its pictures titled by its point, and a diverged
trial's accuracies the same in the driver's summary as in the MLflow UI (the last ones logged)."""

from __future__ import annotations

from typing import Any

from sweep import trial as trial_module
from sweep.config import ObjectiveConfig
from sweep.points import Point
from sweep.trial import POINT_KEY, SweepContext, run_trial
from trainer import keys


class FakeRun:
    """Stands in for tracking.TrialRun: records what the trial logs."""

    logged: list[dict[str, Any]] = []

    def __init__(self, *args: Any) -> None:
        pass

    def open(self, *args: Any, **kw: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any], step: int, tags: dict[str, str] | None = None) -> None:
        FakeRun.logged.append(dict(metrics))

    def log_files(self, files: Any) -> None:
        list(files)

    def log_checkpoint(self, *args: Any, **kw: Any) -> None:
        pass

    def find(self) -> None:  # no earlier run of this point in MLflow
        return None

    def set_status(self, status: Any) -> None:
        pass

    def end(self, status: Any) -> None:
        pass


def test_a_diverged_trial_reports_the_accuracies_the_ui_shows_and_its_pictures_name_the_point(monkeypatch, tmp_path):
    seen = {}

    def fake_run(cfg, report, checkpoint_dir, out_dir):
        seen["label"] = cfg.eval.label
        (checkpoint_dir / "last.pt").write_bytes(b"x")
        report({keys.EPOCH: 1, keys.STATUS: "running", keys.VAL_ACC: 0.049, keys.TEST_ACC: 0.044,
                keys.lo_key(keys.VAL_ACC): 0.02, keys.hi_key(keys.VAL_ACC): 0.1}, {})
        report({keys.EPOCH: 2, keys.STATUS: "diverged"}, {})
        return {keys.EPOCH: 2, keys.STATUS: "diverged"}

    monkeypatch.setattr(trial_module.tracking, "TrialRun", FakeRun)
    monkeypatch.setattr("trainer.train.run", fake_run)
    point = Point((("loss.lam", 1e-3), ("loss.mu", 1e-4)), 0)
    base = {"loss": {"kind": "score_matching"}, "device": "cpu"}
    ctx = SweepContext("s", "sqlite://", "1", "p", base, ObjectiveConfig(name="accuracy"), None, 1,
                       points={point.key: point}, names={point.key: "sm λ1e-3 μ1e-4 s0"})
    reported = []
    run_trial(ctx, {POINT_KEY: point.key}, "t0", None, lambda result, ckpt: reported.append(result))
    assert seen["label"] == "sm λ1e-3 μ1e-4 s0"
    # MLflow's last values of the accuracies are epoch 1's; Tune's last result (the summary's) too.
    last_logged = {k: v for m in FakeRun.logged for k, v in m.items() if k in (keys.VAL_ACC, keys.TEST_ACC)}
    assert last_logged == {keys.VAL_ACC: 0.049, keys.TEST_ACC: 0.044}
    assert reported[-1][keys.STATUS] == "diverged"
    assert {k: reported[-1][k] for k in last_logged} == last_logged
    # with the interval epoch 1 logged, so the summary's row for the diverged trial is not bare
    assert (reported[-1][keys.lo_key(keys.VAL_ACC)], reported[-1][keys.hi_key(keys.VAL_ACC)]) == (0.02, 0.1)
