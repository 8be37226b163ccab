"""The driver killed at every phase boundary, then ``--resume``; two drivers of one name at once;
a local sweep listening on loopback only. Real drivers in subprocesses on a sqlite store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from helpers import TINY
from sweep import kill_points, tracking
from sweep.record import JUDGES_EXPERIMENT, Tag
from trainer import keys

EPOCHS = 2
NAME = "k'ill"  # a quote in the name: every filter and printed command must cope with it


def _args(tmp_path: Path, resume: bool, name: str = NAME) -> list[str]:
    sets = [*TINY, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.epochs={EPOCHS}",
            "max_concurrent_trials=1", "search.grid.loss.lam=[1.0e-3]",
            "search.points=[{loss.preset: baseline}]"]  # fmt: skip
    return [sys.executable, "-m", "sweep.run", "--name", name, *sum((["--set", s] for s in sets), []),
            *(["--resume"] if resume else [])]  # fmt: skip


def _drive(tmp_path: Path, resume: bool, kill_at: str | None, log: Path, name: str = NAME) -> subprocess.Popen:
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}  # Tune saves its state at every step
    env.pop(kill_points.ENV_KILL_AT, None)
    if kill_at:
        env[kill_points.ENV_KILL_AT] = kill_at
    return subprocess.Popen(
        _args(tmp_path, resume, name), cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _wait(proc: subprocess.Popen, timeout: float = 400, watch=None) -> int:
    """Wait for the driver, then kill what it left (its private Ray dies with it, as on a lost host)."""
    family: set[psutil.Process] = set()
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            family.update(psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:  # a child ended while being listed
            pass
        if watch is not None:
            watch(proc)
        time.sleep(0.3)
    if proc.poll() is None:
        proc.kill()
    code = proc.wait(30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(family), timeout=30)
    return code


@pytest.mark.slow  # seven driver starts of a 2-trial sweep: minutes (each starts a local Ray)
@pytest.mark.timeout(1500)
def test_a_driver_killed_at_every_phase_boundary_is_resumed_to_the_end(ray_cluster, tmp_path):
    for i, point in enumerate(kill_points.POINTS):
        log = tmp_path / f"driver-{i}-{point}.log"
        code = _wait(_drive(tmp_path, resume=i > 0, kill_at=point, log=log))
        assert code == -signal.SIGKILL, (point, log.read_text()[-3000:])
        if point == "result":
            # A trial's checkpoint truncated (a full disk, a broken copy): the resume must notice it
            # and fall back instead of failing the point forever.
            truncated = list((tmp_path / "sweep_results" / NAME).rglob("last.pt"))
            assert truncated, "Tune recorded no trial checkpoint before the kill"
            for path in truncated:
                path.write_bytes(path.read_bytes()[:100])
    # A plain rerun is refused (the name is not free), --resume finishes it.
    refused = subprocess.run(_args(tmp_path, resume=False), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--resume" in refused.stderr, refused.stderr
    log = tmp_path / "driver-final.log"
    assert _wait(_drive(tmp_path, resume=True, kill_at=None, log=log)) == 0, log.read_text()[-3000:]

    mc = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mc.get_experiment_by_name(NAME)
    parents = mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["trainer.epochs"] == str(EPOCHS)
    assert tracking.find_parent(mc, NAME, NAME) == parents[0].info.run_id
    trials = mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")
    assert len(trials) == 2 and len({r.data.tags[Tag.KEY] for r in trials}) == 2  # no duplicate runs
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags[Tag.STATUS] == "finished", run.info.run_name
        for key in (keys.TRAIN_LOSS, keys.EPOCH, keys.TEST_ACC):
            steps = [m.step for m in mc.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.info.run_name, key, steps)
    assert any(Tag.RESTARTED in r.data.tags for r in trials)  # the truncated checkpoint was noticed
    # Nothing left RUNNING anywhere, judges included (a judge run killed half-logged is closed).
    judges = mc.get_experiment_by_name(JUDGES_EXPERIMENT)
    for exp_id in (exp.experiment_id, judges.experiment_id):
        assert mc.search_runs([exp_id], "attributes.status = 'RUNNING'") == []
    assert len(mc.search_runs([judges.experiment_id], "attributes.status = 'FINISHED'")) == 1


def _listening(pids: set[int]) -> list[str]:
    """Non-loopback listening TCP sockets owned by ``pids``."""
    out = []
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids and c.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            out.append(f"{c.laddr.ip}:{c.laddr.port} pid {c.pid}")
    return out


@pytest.mark.slow  # one tiny sweep while a second start of its name is refused
@pytest.mark.timeout(900)
def test_two_starts_of_one_name_one_runs_on_loopback_the_other_exits_2(tmp_path):
    first = _drive(tmp_path, resume=False, kill_at=None, log=tmp_path / "first.log", name="twice")
    second = _drive(tmp_path, resume=False, kill_at=None, log=tmp_path / "second.log", name="twice")
    exposed: list[str] = []
    seen_ray = []

    def watch(proc: subprocess.Popen) -> None:
        try:
            family = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.Error:
            return
        if len(family) > 3:
            seen_ray.append(len(family))
            exposed.extend(_listening(family))

    codes = sorted([_wait(first, watch=watch), _wait(second, watch=watch)])
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert codes == [0, 2], logs[-4000:]
    assert "is running already (pid " in logs
    assert seen_ray and exposed == [], exposed
    mc = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mc.get_experiment_by_name("twice")
    assert len(mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")) == 1
    assert len(mc.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")) == 2
