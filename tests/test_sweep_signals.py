"""SIGTERM and SIGHUP to the sweep driver are handled as Ctrl-C: the trials stop at a safe point,
one line says what was kept and how to continue, no MLflow run is left RUNNING, the exit status
is 128 + the signal's number, and no Ray process outlives the driver by more than 10 s.

The signal goes to the driver's process only (``kill PID``, a container's PID 1, a scheduler's
preemption); the driver runs in its own session so the test can find every process it started.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from helpers import TINY, child_runs
from test_sweep_ctrlc import _assert_clean, _continue, _start

EXPERIMENT = "signals-test"


def _args(uri: str, name: str) -> list[str]:
    sets = [*TINY, f"tracking.uri={uri}", f"experiment={EXPERIMENT}", "trainer.epochs=2", "max_concurrent_trials=1",
            "search.grid.loss.lam=[1.0e-3, 1.0e-4]", "search.points=[{loss.preset: baseline}]", "analysis=false"]  # fmt: skip
    return ["--name", name, *sum((["--set", s] for s in sets), [])]


def _session(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (the driver and everything it started, Ray's included)."""
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


def _signal_when(proc, log: Path, marker: str, signum: int, code: int, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while marker not in log.read_text():
        assert proc.poll() is None, f"the driver ended before {marker!r}:\n{log.read_text()}"
        assert time.time() < deadline, f"never saw {marker!r}:\n{log.read_text()}"
        time.sleep(0.2)
    os.kill(proc.pid, signum)  # the driver alone, not its group
    assert proc.wait(timeout=180) == code, log.read_text()
    ended = time.time()
    while _session(proc.pid) and time.time() - ended < 10:
        time.sleep(0.5)
    left = _session(proc.pid)
    for p in left:  # leave the machine clean before failing
        p.kill()
    assert not left, f"processes outlived the driver by 10 s: {[p.name() for p in left]}"
    return log.read_text()


def _none_running(uri: str, name: str) -> str:
    from sweep import tracking

    mc = mlflow.MlflowClient(uri)
    parent = tracking.find_parent(mc, EXPERIMENT, name)
    assert mc.get_run(parent).info.status == "KILLED" and mc.get_run(parent).data.tags["sweep.interrupted"] == "true"
    assert all(r.info.status != "RUNNING" for r in child_runs(uri, EXPERIMENT, parent))
    return parent


@pytest.mark.slow  # ~3 min on an idle 2-core machine: a sweep stopped by SIGTERM mid-trial, then continued
@pytest.mark.timeout(900)
def test_sigterm_during_trials_exits_143_like_ctrl_c_and_resume_finishes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, log = _start(_args(uri, "termed"), tmp_path)
    out = _signal_when(proc, log, "epoch 1/2", signal.SIGTERM, 143)
    _assert_clean(out)
    assert "*** " not in out and "SIGTERM received" not in out  # no C++ stack dump
    (line,) = [line for line in out.splitlines() if " interrupted " in line]
    assert line.startswith("sweep 'termed' interrupted by SIGTERM during the trials: kept ") and " --resume" in line
    parent = _none_running(uri, "termed")
    code, again = _continue(out, tmp_path)
    assert code == 0, again
    runs = child_runs(uri, EXPERIMENT, parent)
    assert sorted(r.info.run_name for r in runs) == ["base s0", "sm λ1e-3 μ1e-4 s0", "sm λ1e-4 μ1e-4 s0"]
    assert {r.data.tags["trial.status"] for r in runs} == {"finished"}


@pytest.mark.slow  # ~1-2 min on an idle 2-core machine: a sweep stopped by SIGHUP mid-trial
@pytest.mark.timeout(600)
def test_sighup_during_trials_exits_129_with_the_resume_line_and_no_orphans(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, log = _start(_args(uri, "hung"), tmp_path)
    out = _signal_when(proc, log, "epoch 1/2", signal.SIGHUP, 129)
    _assert_clean(out)
    (line,) = [line for line in out.splitlines() if " interrupted " in line]
    assert line.startswith("sweep 'hung' interrupted by SIGHUP during the trials: kept ") and " --resume" in line
    _none_running(uri, "hung")


@pytest.mark.slow  # ~1 min: SIGTERM while the judge trains (outside Tune's handling)
@pytest.mark.timeout(600)
def test_sigterm_in_the_judge_stage_exits_143(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = _args(uri, "judged")
    args[args.index("judge.epochs=1")] = "judge.epochs=4"
    proc, log = _start(args, tmp_path)
    out = _signal_when(proc, log, "training it once", signal.SIGTERM, 143)
    _assert_clean(out)
    (line,) = [line for line in out.splitlines() if " interrupted " in line]
    assert line.startswith("sweep 'judged' interrupted by SIGTERM in the judge stage")


@pytest.mark.slow  # ~1-2 min on an idle 2-core machine: the local raylet killed mid-trial
@pytest.mark.timeout(600)
def test_a_killed_raylet_ends_with_one_line_the_resume_command_and_exit_1(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, log = _start(_args(uri, "lost"), tmp_path)
    deadline = time.time() + 300
    while "epoch 1/2" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.2)
    (raylet,) = [p for p in _session(proc.pid) if p.name() == "raylet"]
    raylet.kill()
    assert proc.wait(timeout=240) == 1, log.read_text()
    out = log.read_text()
    lines = [line for line in out.splitlines() if line.startswith("sweep 'lost' stopped")]
    assert len(lines) == 1 and "Ray" in lines[0] and " --resume" in lines[0], out
    _none_running(uri, "lost")
    ended = time.time()
    while _session(proc.pid) and time.time() - ended < 10:
        time.sleep(0.5)
    left = _session(proc.pid)
    for p in left:
        p.kill()
    assert not left, [p.name() for p in left]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_does_what_sigint_does_at_that_moment_and_names_the_exit_status(signum):
    """Without a sweep: the handler calls the current SIGINT handler (Tune's during the trials),
    raises KeyboardInterrupt under the driver's own, is recorded while SIGINT is ignored."""
    from sweep import stopping

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, *stopping.STOP_SIGNALS)}
    try:
        stopping.install()
        with pytest.raises(KeyboardInterrupt):  # the driver's handler: an interrupt right here
            os.kill(os.getpid(), signum)
            time.sleep(1)
        assert stopping.pressed() and stopping.signal_number() == signum and 128 + signum in (143, 129)
        assert stopping.cause() == ("SIGTERM" if signum == signal.SIGTERM else "SIGHUP")

        stopping.install()
        calls = []
        signal.signal(signal.SIGINT, lambda s, f: calls.append(s))  # as Tune's graceful stop
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
        assert calls == [signal.SIGINT] and stopping.pressed() and stopping.signal_number() == signum

        stopping.install()
        stopping.ignore()  # a clean-up step: recorded, not raised
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
        assert stopping.pressed() and stopping.signal_number() == signum
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
