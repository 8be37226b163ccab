"""Shared fixtures, and how the suite stays fast. Which fixture to use for what:

``tiny_sweep``      one finished tiny grid sweep (a digits subset; two score-matching points, the
                    baseline and one point that diverges) on ``mlflow_server``, made once per test
                    session (per worker under ``-n``). Use it whenever a test only *reads* a
                    finished sweep: its MLflow runs, artifacts, analysis files, UI view. Never
                    write to it; a test that writes makes its own sweep in ``tmp_path``.
``mlflow_server``   one real ``mlflow server`` on loopback for the session (sqlite backend, proxied
                    artifacts). Use it for in-process sweeps that write (Optuna, warm start,
                    budget, resume): give each its own ``--name``/experiment and
                    ``storage_path=tmp_path``, so tests never see each other's runs. The judge of
                    the tiny config is trained once on it and found by its key afterwards.
``ray_cluster``     one local Ray cluster (``ray start --head`` on loopback, token authentication
                    with the user's token, 2 CPUs as a private start would see) per test session
                    (per worker), which a test's sweeps join through ``RAY_ADDRESS``: in process,
                    and in the driver subprocesses that inherit the test's environment. Starting
                    Ray costs a tiny sweep about a third of its CPU time (measured: 39 against
                    26 busy CPU-seconds); joining costs about a second. Use
                    it for sweeps whose test is about the sweep's own bookkeeping (resume, kill,
                    Optuna, budget, warm start, confirmation), which is what a user's
                    ``--address`` run does. Tests of what the driver does with the Ray it starts
                    itself (signals, orphans, a killed raylet, loopback, Ctrl-C) start their own
                    and do not use it.
``trial_store``     a sqlite store in ``tmp_path`` with an experiment and a parent run, for tests of
                    one trial's MLflow run.
(autouse)           a new MLflow SQLite store made in the test process starts as a copy of an
                    empty one MLflow migrated once per session (milliseconds instead of about
                    2 s of migrations); stores made by driver subprocesses migrate as usual.
``tmp_path``        a fresh folder. Every kill, Ctrl-C and fault test uses its own (with its own
                    sqlite store when it kills a driver), never a shared fixture.

The suite runs on two pytest-xdist workers (pyproject's ``addopts``: ``-n 2 --dist loadgroup``;
``-n 0`` runs it in one process). The hooks below make that safe and quick: every test that uses
``tiny_sweep`` is put in one xdist group, so only one worker builds the sweep; tests marked
``slow`` are started first, so the longest ones do not end up alone at the end of the run. A test
that must not share a worker with the tiny sweep's readers, or that needs to run after another
test, says so with ``@pytest.mark.xdist_group("name")`` (tests of one group run in one worker, in
file order). pytest is pinned below 9.2 in the dev extra: with pytest 9.2 and pytest-xdist 3.8
the groups are not honoured (xdist writes the group into a node-id field pytest 9.2 no longer
reads; pytest-xdist issue 1386), and each worker would build its own tiny sweep.

``pytest -q -m "not slow"`` is the fast loop while editing: it starts no Ray. Every test that runs
a sweep end to end (a local Ray, a judge, trials) is ``slow``: it is marked so, and every reader of
``tiny_sweep`` is made so by the hook below. Sweeps that a test does not read the confirmation or
the analysis of switch them off (``confirm.enabled=false``, ``analysis=false``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import TINY, TINY_POINTS, free_port, run_sweep, stop_session


TINY_SWEEP_GROUP = "tiny_sweep"  # the xdist group of every reader of the session's tiny sweep


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker, so ``-m "not slow"`` sees it
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Readers of ``tiny_sweep`` are ``slow`` (they need an end-to-end sweep that starts Ray) and in
    one xdist group; ``slow`` tests first (longest work first keeps both workers busy to the end)."""
    for item in items:
        if "tiny_sweep" in getattr(item, "fixturenames", ()):
            if item.get_closest_marker("slow") is None:
                item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(TINY_SWEEP_GROUP))

    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: OpenMP hand-offs cost more than they save."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@dataclass(frozen=True)
class MlflowServer:
    uri: str  # http://127.0.0.1:PORT
    root: Path  # its backend database and artifacts live here


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow tracking server on a free loopback port, for the whole session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
        # no background job runner: one process less on a 2-core machine
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    # The first start creates the database: seconds on an idle machine, but over 90 s was seen with
    # two workers starting servers at once on 2 heavily loaded cores.
    deadline = time.time() + 300
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield MlflowServer(uri, root)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@dataclass(frozen=True)
class RayCluster:
    address: str  # 127.0.0.1:PORT of its GCS
    env: dict[str, str]  # what a driver needs to join it

    def join(self, env: pytest.MonkeyPatch) -> None:
        """Make the sweeps of this process, and the drivers it starts, join this cluster."""
        env.setenv("RAY_ADDRESS", self.address)
        for var, value in self.env.items():
            env.setenv(var, value)


@pytest.fixture(scope="session")
def _ray_head() -> RayCluster:
    """Start the session's Ray head (see ``ray_cluster``) and end it with the session."""
    from ray._private.authentication.authentication_token_setup import _enable_token_auth, generate_and_save_token

    # Token authentication with the user's token (~/.ray/auth_token), which a private ``ray.init``
    # in this process also uses (Ray caches the token per process, so the two must agree). A driver
    # joins with RAY_AUTH_MODE=token in its environment; in this process, which imported Ray before,
    # Ray's cached config must be told as well: what a private ``ray.init`` here does anyway.
    if not (Path.home() / ".ray" / "auth_token").exists():
        generate_and_save_token()
    _enable_token_auth()
    env = {"RAY_AUTH_MODE": "token"}
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-t-"))  # short: Ray's socket paths stay under 108 bytes
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
        "--include-dashboard=false", f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    # Loopback only, as the sweep's own local start (sweep.engine.session.LOOPBACK_ENV).
    head_env = {**os.environ, **env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    log = open(temp_dir / "head.log", "w")
    proc = subprocess.Popen(cmd, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while "Ray runtime started" not in (temp_dir / "head.log").read_text():
        if proc.poll() is not None or time.time() > deadline:
            stop_session(proc)
            raise RuntimeError(f"ray start failed: {(temp_dir / 'head.log').read_text()[-2000:]}")
        time.sleep(0.3)
    yield RayCluster(address, env)
    stop_session(proc)
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_cluster(_ray_head: RayCluster, monkeypatch: pytest.MonkeyPatch) -> RayCluster:
    """The session's Ray cluster, joined by every sweep this test runs (``RAY_ADDRESS``)."""
    _ray_head.join(monkeypatch)
    return _ray_head


@pytest.fixture
def trial_store(tmp_path: Path) -> tuple[str, str, str]:
    """A sqlite store in ``tmp_path`` with an experiment and a sweep's parent run, for tests of
    one trial's run: (tracking URI, experiment id, parent run id)."""
    from sweep import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mc = tracking.client(uri)
    exp = tracking.ensure_experiment(mc, "e", (tmp_path / "artifacts").as_uri())
    (tmp_path / "sweep.yaml").write_text("x: 1\n")
    return uri, exp, tracking.start_parent(mc, exp, "s", {"a": 1}, tmp_path / "sweep.yaml")


@dataclass(frozen=True)
class TinySweep:
    tracking_uri: str
    experiment: str
    parent_run_id: str
    name: str
    storage_path: Path
    points: int  # trials in the sweep (children under the parent)
    exit_code: int


@pytest.fixture(scope="session")
def tiny_sweep(
    mlflow_server: MlflowServer, _ray_head: RayCluster, tmp_path_factory: pytest.TempPathFactory
) -> TinySweep:
    """One finished tiny grid sweep on the session's MLflow server and Ray cluster (4 trials, one
    diverged)."""
    from sweep import tracking

    storage = tmp_path_factory.mktemp("tiny-sweep")
    name = "tiny"
    cwd = os.getcwd()
    os.chdir(storage)  # the sweep writes its analysis under the working folder (out/analysis/...)
    try:
        with pytest.MonkeyPatch.context() as env:
            _ray_head.join(env)
            code = run_sweep(
                ["--name", name, "--set", f"tracking.uri={mlflow_server.uri}", "--set", f"storage_path={storage}",
                 "--set", "experiment=tiny-sweep", "--set", TINY_POINTS, *sum((["--set", s] for s in TINY), [])]
            )  # fmt: skip
    finally:
        os.chdir(cwd)
    parent = tracking.find_parent(tracking.client(mlflow_server.uri), "tiny-sweep", name)
    assert parent is not None, "the tiny sweep left no parent run"
    return TinySweep(mlflow_server.uri, "tiny-sweep", parent, name, storage, 4, code)


@pytest.fixture(autouse=True, scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory):
    """A fresh MLflow SQLite store in this process starts as a copy of one that MLflow migrated.

    MLflow creates a new SQLite store by running its whole chain of schema migrations: about 2 s
    of CPU, paid by every test that makes a store of its own. Here MLflow's own migration runs
    once per session into a template, and each new store receives the template's tables through
    SQLite's backup API (milliseconds): the same schema, empty, with MLflow's own code doing
    everything after it (the default experiment, the schema check). Stores made by driver
    subprocesses still migrate the usual way.
    """
    import sqlite3

    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    migrate = db_utils._initialize_tables
    template = tmp_path_factory.mktemp("mlflow-template") / "empty.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{template}")
    migrate(engine)
    engine.dispose()

    def from_template(engine: sqlalchemy.engine.Engine) -> None:
        if engine.dialect.name != "sqlite":
            migrate(engine)
            return
        target = engine.raw_connection()
        try:
            with sqlite3.connect(template) as source:
                source.backup(target.driver_connection)
        finally:
            target.close()

    db_utils._initialize_tables = from_template
    yield
    db_utils._initialize_tables = migrate


@pytest.fixture(autouse=True, scope="session")
def _quiet_environment() -> None:
    # Tests never reach a real cluster or a user's MLflow from the environment.
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "SWEEP_STORAGE_PATH", "SWEEP_NODE_RESOURCES"):
        os.environ.pop(var, None)
