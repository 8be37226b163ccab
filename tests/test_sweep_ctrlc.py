"""Ctrl-C of the sweep driver: exit 130, one line with what was kept and the command that
continues, no traceback, none of Ray's own advice; then that command finishes without
duplicating a run.

The driver runs in its own session and SIGINT goes to its whole process group, as a terminal
sends it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY, child_runs

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "ctrlc-test"


def _args(uri: str, name: str, *extra: str) -> list[str]:
    sets = [*TINY, f"tracking.uri={uri}", f"experiment={EXPERIMENT}", "trainer.epochs=2",
            "max_concurrent_trials=1",
            "search.grid.loss.lam=[1.0e-3, 1.0e-4]", "search.points=[{loss.preset: baseline}]", *extra]  # fmt: skip
    return ["--name", name, *sum((["--set", s] for s in sets), [])]


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, Path]:
    log = cwd / "driver.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *args], cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True, env=env,
    )  # fmt: skip
    return proc, log


def _interrupt_when(proc: subprocess.Popen, log: Path, marker: str, timeout: float = 300) -> str:
    """SIGINT to the driver's process group once ``marker`` is in its output; its output."""
    deadline = time.time() + timeout
    while marker not in log.read_text():
        assert proc.poll() is None, f"the driver ended before {marker!r}:\n{log.read_text()}"
        assert time.time() < deadline, f"never saw {marker!r}:\n{log.read_text()}"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=180) == 130, log.read_text()
    return log.read_text()


def _continue(out: str, cwd: Path) -> tuple[int, str]:
    """Run the command of the driver's interrupt line; its exit status and output."""
    (line,) = [line for line in out.splitlines() if " interrupted " in line]
    command = re.split(r"(?:continue with|start it again with): ", line)[-1]
    assert command.startswith(f"cd {shlex.quote(str(cwd))} && python -m sweep.run ")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = shlex.split(command.split(" && ", 1)[1])
    done = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    return done.returncode, done.stdout + done.stderr


def _assert_clean(out: str) -> None:
    assert "Traceback" not in out and "Exception ignored" not in out, out
    assert "Tuner.restore" not in out and "Failed to fetch metrics" not in out, out
    assert "_trainable_" not in out, out


@pytest.mark.slow  # ~2-3 min on an idle 2-core machine: a sweep interrupted mid-trial, then continued
@pytest.mark.timeout(900)
def test_ctrl_c_during_trials_exits_130_and_resume_finishes_every_point_once(mlflow_server, tmp_path):
    proc, log = _start(_args(mlflow_server.uri, "trials"), tmp_path)
    out = _interrupt_when(proc, log, "epoch 1/2")
    _assert_clean(out)
    (line,) = [line for line in out.splitlines() if "interrupted" in line]
    assert line.startswith("sweep 'trials' interrupted during the trials: kept ")
    assert "not started (" in line and "base s0" in line  # never-started trials by point
    assert line.endswith(" --resume " + " ".join(f"--set {shlex.quote(s)}" for s in _args(mlflow_server.uri, "trials")[3::2]))
    import mlflow

    from sweep import tracking

    mc = mlflow.MlflowClient(mlflow_server.uri)
    parent = tracking.find_parent(mc, EXPERIMENT, "trials")
    assert mc.get_run(parent).info.status == "KILLED" and mc.get_run(parent).data.tags["sweep.interrupted"] == "true"

    code, again = _continue(out, tmp_path)
    assert code == 0, again
    _assert_clean(again)
    runs = child_runs(mlflow_server.uri, EXPERIMENT, parent)
    assert sorted(r.info.run_name for r in runs) == ["base s0", "sm λ1e-3 μ1e-4 s0", "sm λ1e-4 μ1e-4 s0"]
    assert {r.data.tags["trial.status"] for r in runs} == {"finished"}
    assert mc.get_run(parent).info.status == "FINISHED"
    assert "Best point: " in again


@pytest.mark.slow  # ~2 min on an idle 2-core machine: interrupted while its judge trains, then started again
@pytest.mark.timeout(900)
def test_ctrl_c_in_the_judge_stage_exits_130_without_a_traceback(mlflow_server, tmp_path):
    args = _args(mlflow_server.uri, "judged", "judge.epochs=4", "trainer.epochs=1", "search.grid.loss.lam=[1.0e-3]")
    proc, log = _start(args, tmp_path)
    out = _interrupt_when(proc, log, "training it once")
    _assert_clean(out)
    (line,) = [line for line in out.splitlines() if "interrupted" in line]
    assert line.startswith("sweep 'judged' interrupted in the judge stage: no trial had started")
    code, again = _continue(out, tmp_path)
    assert code == 0, again
    import mlflow

    from sweep import tracking

    parent = tracking.find_parent(mlflow.MlflowClient(mlflow_server.uri), EXPERIMENT, "judged")
    assert sorted(r.info.run_name for r in child_runs(mlflow_server.uri, EXPERIMENT, parent)) == [
        "base s0", "sm λ1e-3 μ1e-4 s0"]  # fmt: skip
