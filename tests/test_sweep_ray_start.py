"""sweep.tune.start: Ray's fixed 30 s node-startup timeout, met on a busy machine, is tried once
more, then refused by the driver in one line (exit 2, nothing written)."""

from __future__ import annotations

import pytest

from sweep import tune as sweep_tune

TIMEOUT = Exception("The current node timed out during startup. This could happen because ...")


def _fake_init(failures: int, calls: list):
    def init(**kw):
        calls.append(kw["address"])
        if len(calls) <= failures:
            raise TIMEOUT

    return init


def test_a_startup_timeout_is_tried_once_more(monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(sweep_tune.ray, "init", _fake_init(1, calls))
    monkeypatch.setattr(sweep_tune.ray, "shutdown", lambda: None)
    try:
        sweep_tune.start(None)
    finally:
        sweep_tune._loopback(False)
    assert calls == ["local", "local"]
    assert "trying once more" in capsys.readouterr().out


def test_two_startup_timeouts_raise_start_timeout_and_other_errors_pass_through(monkeypatch):
    calls: list = []
    monkeypatch.setattr(sweep_tune.ray, "init", _fake_init(2, calls))
    monkeypatch.setattr(sweep_tune.ray, "shutdown", lambda: None)
    with pytest.raises(sweep_tune.StartTimeout):
        sweep_tune.start(None)
    sweep_tune._loopback(False)
    assert len(calls) == 2

    def other(**kw):
        raise ValueError("something else")

    monkeypatch.setattr(sweep_tune.ray, "init", other)
    with pytest.raises(ValueError):
        sweep_tune.start(None)
    sweep_tune._loopback(False)


def test_the_driver_refuses_in_one_line_with_exit_2(monkeypatch, tmp_path, capsys):
    from helpers import TINY, run_sweep

    def timeout(address):
        raise sweep_tune.StartTimeout("timed out during startup")

    monkeypatch.setattr(sweep_tune, "start", timeout)
    monkeypatch.chdir(tmp_path)
    code = run_sweep(["--name", "busy", "--set", f"storage_path={tmp_path / 'ray'}",
                      "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sum((["--set", s] for s in TINY), [])])
    err = capsys.readouterr().err
    assert code == 2
    assert "did not start within its 30 s, twice" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "ray" / "busy").exists() or not any((tmp_path / "ray" / "busy").iterdir())


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:6379", True), ("localhost:6379", True), ("[::1]:6379", True), ("ray://127.0.0.1:10001", True),
     ("10.0.0.5:6379", False), ("head.example.org:6379", False), ("127.0.0.10:6379", False)],
)  # fmt: skip
def test_joining_a_cluster_on_loopback_keeps_ray_on_loopback(monkeypatch, address, loopback):
    # Ray rewrites a 127.0.0.1 address to the node's network address unless its loopback switch
    # is on; a head started on loopback does not listen there, and ray.init would wait minutes.
    from ray._private import ray_constants

    seen: list = []
    monkeypatch.setattr(sweep_tune.ray, "init", lambda **kw: seen.append(ray_constants.ENABLE_RAY_CLUSTER))
    monkeypatch.setattr(sweep_tune.ray, "shutdown", lambda: None)
    before = ray_constants.ENABLE_RAY_CLUSTER
    sweep_tune.start(address)
    sweep_tune.stop()
    assert seen == [before and not loopback]
    assert ray_constants.ENABLE_RAY_CLUSTER == before  # stop() undid it
