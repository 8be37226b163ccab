"""sweep.engine.session.start: a local Ray on a busy machine waits up to SWEEP_RAY_START_TIMEOUT (Ray's own
limit is a fixed 30 s) and, when even that runs out, the driver refuses in one line (exit 2,
nothing written); the local Ray's auth token and session folders are this user's alone."""

from __future__ import annotations

import inspect
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from sweep import engine
from sweep.engine import session as sweep_tune

TIMEOUT = Exception("The current node timed out during startup. This could happen because ...")


def test_ray_still_waits_a_fixed_30_s_on_its_node_clock():
    # What the start limit stretches (sweep.engine.session._node_start_limit): if Ray changes this, fail here first.
    from ray._private import node as ray_node

    source = inspect.getsource(ray_node.Node.__init__)
    assert f"raylet_start_wait_time_s = {sweep_tune.RAY_NODE_WAIT_S}" in source
    assert "start_time = time.monotonic()" in source and "time.monotonic() - start_time > raylet_start_wait_time_s" in source
    assert ray_node.time is time


def test_the_node_clock_runs_slower_only_while_a_local_ray_starts(monkeypatch, tmp_path):
    from ray._private import node as ray_node

    seen: list = []

    def init(**kw):
        clock = ray_node.time
        before = clock.monotonic()
        time.sleep(0.3)
        seen.append((kw["address"], clock.monotonic() - before, clock.sleep is time.sleep))

    monkeypatch.setattr(sweep_tune.ray, "init", init)
    monkeypatch.setattr(sweep_tune.ray, "shutdown", lambda: None)
    monkeypatch.setenv(engine.START_TIMEOUT_ENV, "300")
    monkeypatch.setattr(sweep_tune, "_private_token", lambda: None)  # the user's own token is left alone
    monkeypatch.setattr(sweep_tune, "_narrow_token", lambda: None)
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    sweep_tune.start(None)
    sweep_tune.stop()
    (address, elapsed, sleeps), = seen
    assert address == "local" and sleeps and 0.3 / 10 * 0.5 < elapsed < 0.3 / 10 * 2  # 300 s / 30 s: ten times slower
    assert ray_node.time is time  # restored


def test_a_startup_timeout_raises_start_timeout_naming_the_limit_and_other_errors_pass_through(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    def init(**kw):
        calls.append(kw["address"])
        raise TIMEOUT

    monkeypatch.setattr(sweep_tune.ray, "init", init)
    monkeypatch.setattr(sweep_tune.ray, "shutdown", lambda: None)
    monkeypatch.setattr(sweep_tune, "_private_token", lambda: None)
    monkeypatch.setenv(engine.START_TIMEOUT_ENV, "120")
    with pytest.raises(sweep_tune.StartTimeout, match="within 120 s"):
        sweep_tune.start(None)
    sweep_tune.stop()
    assert calls == ["local"]  # one start with the long limit, not two with Ray's

    def other(**kw):
        raise ValueError("something else")

    monkeypatch.setattr(sweep_tune.ray, "init", other)
    with pytest.raises(ValueError):
        sweep_tune.start(None)
    sweep_tune.stop()


def test_the_driver_refuses_in_one_line_with_exit_2(monkeypatch, tmp_path, capsys):
    from helpers import TINY, run_sweep

    def timeout(address):
        raise sweep_tune.StartTimeout("the local node did not start within 300 s")

    monkeypatch.setattr(sweep_tune, "start", timeout)
    monkeypatch.chdir(tmp_path)
    code = run_sweep(["--name", "busy", "--set", f"storage_path={tmp_path / 'ray'}",
                      "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *sum((["--set", s] for s in TINY), [])])
    err = capsys.readouterr().err
    assert code == 2
    assert "did not start within 300 s (SWEEP_RAY_START_TIMEOUT)" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "ray" / "busy").exists() or not any((tmp_path / "ray" / "busy").iterdir())


def test_a_bad_start_limit_is_refused_before_ray(monkeypatch):
    from sweep.preflight import PreflightError, check_ray_local

    for bad in ("soon", "0", "-5", "inf"):
        with pytest.raises(PreflightError, match=f"SWEEP_RAY_START_TIMEOUT={bad}: must be a positive number"):
            check_ray_local(None, {"SWEEP_RAY_START_TIMEOUT": bad, "HOME": str(Path.home())})


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


# --- a real local Ray ----------------------------------------------------------------------------

_START = (
    "import os, sys, time\n"
    "from sweep.engine import session as tune\n"
    "started = time.time()\n"
    "tune.start(None)\n"
    "print('started after', round(time.time() - started), 's; temp root', os.environ['RAY_TMPDIR'], flush=True)\n"
    "tune.stop()\n"
)


@pytest.fixture
def short_tmp():
    """A fresh folder with a short path (Ray's socket paths under it must stay below 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start_local_ray(tmp: Path, **env: str) -> subprocess.Popen:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.Popen(
        [sys.executable, "-c", _START], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**clean, "HOME": str(home), "TMPDIR": str(tmp), **env}, start_new_session=True,
    )  # fmt: skip


def _end(proc: subprocess.Popen) -> None:
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == proc.pid:
                p.kill()
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass


@pytest.mark.slow  # a local Ray start whose raylet is held stopped for 45 s
@pytest.mark.timeout(600)
def test_a_raylet_that_takes_longer_than_rays_30_s_to_register_still_starts(short_tmp):
    # As on a 2-core machine at load 35: the raylet gets no CPU for longer than Ray's fixed 30 s.
    # Every raylet that appears is stopped for 45 s (Ray alone: both of the old two tries failed).
    proc = _start_local_ray(short_tmp, SWEEP_RAY_START_TIMEOUT="240")
    held: dict[int, float] = {}
    try:
        while proc.poll() is None:
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                family = []
            for p in family:
                try:
                    if p.name() == "raylet" and p.pid not in held:
                        p.suspend()
                        held[p.pid] = time.time()
                except psutil.Error:
                    pass
            for pid, since in list(held.items()):
                if since and time.time() - since > 45:
                    try:
                        psutil.Process(pid).resume()
                    except psutil.Error:
                        pass
                    held[pid] = 0.0
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        _end(proc)
    assert held, "no raylet was seen"
    assert proc.returncode == 0, err[-3000:]
    assert "started after" in out and len(held) == 1, (out, err[-2000:])
    assert "dashboard" not in err.lower(), err[-2000:]


def _started_local_ray(short_tmp: Path) -> str:
    """Start a local Ray in ``short_tmp``'s fresh HOME, end it, and return what it printed (exit 0 asserted)."""
    proc = _start_local_ray(short_tmp)
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        _end(proc)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow  # one local Ray start in a fresh HOME
@pytest.mark.timeout(600)
def test_a_local_ray_keeps_its_token_and_session_folders_to_this_user(short_tmp):
    # Ray created ~/.ray/auth_token 0644 in a fresh HOME (the token guards the loopback ports
    # from other local users) and its session folders 0777 without the sticky bit.
    out = _started_local_ray(short_tmp)
    token = short_tmp / "home" / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text().strip()
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    root = Path(out.split("temp root ")[1].split()[0])
    assert root == short_tmp / f"ray-{os.getuid()}" and stat.S_IMODE(root.stat().st_mode) == 0o700
    assert root.stat().st_uid == os.getuid()
    sessions = list((root / "ray").glob("session_2*"))
    assert sessions, list(root.rglob("*"))[:20]
    # Ray leaves its own folders open (0777) inside: nobody else can pass the private root to them.
    assert any(stat.S_IMODE(p.stat().st_mode) & 0o002 for p in sessions[0].rglob("*") if p.is_dir())
    assert not any(p.is_dir() and stat.S_IMODE(p.stat().st_mode) & 0o002 for p in short_tmp.iterdir())
    # A second start reuses the same private root, and a token that was readable by others is narrowed.
    token.chmod(0o644)
    out = _started_local_ray(short_tmp)
    assert Path(out.split("temp root ")[1].split()[0]) == root
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
