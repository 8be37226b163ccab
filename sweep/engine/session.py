"""Ray's session: a private local Ray on loopback (or a joined cluster), its processes, one-off tasks.

A local start listens on 127.0.0.1 only, waits up to ``SWEEP_RAY_START_TIMEOUT`` (Ray's own
limit is a fixed 30 s), keeps its auth token 0600 and its session folders in a 0700 temp root of
the user's own; :func:`watch_local` notices a killed raylet or GCS; :func:`run_tasks` runs one-off
work (the judge, the confirmation's retrains) as Ray tasks with a trial's resources.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweep.config import SweepConfig
from sweep.engine import start_timeout

# Ray picks a reachable node IP on Linux and binds its gRPC servers (GCS, raylet, workers, the
# driver) and the agents' metrics port to every interface; on macOS and Windows it uses loopback.
# This switch (read by Ray at import and inherited by the processes it starts) selects the
# loopback behaviour, so a local sweep listens on 127.0.0.1 only.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved_env: list[str | None] = []


def _loopback(on: bool) -> None:
    """Make Ray in this process and its children use 127.0.0.1 (``on``), or undo it."""
    # Private name 1 of 4 (reason: Ray reads the switch once, at import, into this constant, and
    # offers no setting after it; test: tests/test_sweep_kill.py's loopback listener check and
    # tests/test_sweep_ray_start.py's joined-cluster test fail if it stops working).
    from ray._private import ray_constants

    if on:
        _saved_env.append(os.environ.get(LOOPBACK_ENV))
        os.environ[LOOPBACK_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif _saved_env:
        saved = _saved_env.pop()
        if saved is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved
        ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(LOOPBACK_ENV, not ray_constants.IS_WINDOWS_OR_OSX)


# Messages of Ray's that a local sweep has no use for, dropped by a filter on the handler of Ray's
# top logger ("ray", which Ray's modules log through; ray.init keeps its handlers): the warning on
# every local start that token authentication is on (the sweep wants it; the warning for it being
# *off* still shows), and the error block Ray logs when its dashboard process fails to start (a
# local sweep starts Ray without a dashboard; Ray carries on).
_RAY_NOISE = ("Token authentication is enabled", "Failed to start the dashboard",
              "Error should be written to 'dashboard.log'", "Couldn't read dashboard.log")  # fmt: skip


class _RayNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith(_RAY_NOISE) or "(it contains the error message from the dashboard)" in text)


def _quiet_ray() -> None:
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, _RayNoise) for f in handler.filters):
            handler.addFilter(_RayNoise())


_quiet_ray()


class StartTimeout(Exception):
    """Ray's local node did not register within the start limit (an overloaded machine)."""


# Private name 2 of 4 (reason: no setting exists; test: tests/test_sweep_ray_start.py). Ray 2.60
# waits a fixed 30 s (a literal, ``raylet_start_wait_time_s``, in its node module's
# ``Node.__init__``, measured with that module's ``time.monotonic``) for a new local
# node's raylet to register, then raises a bare Exception. On a 2-core machine at load 35 the
# raylet needs longer and every start failed, though it would have come up. Ray offers no setting,
# so while ray.init starts the local node, that module's clock runs slower by the factor that
# stretches the 30 s to the start limit (tests/test_sweep_ray_start.py fails first if Ray changes).
RAY_NODE_WAIT_S = 30


class _SlowClock:
    """Stands in for the ``time`` module inside Ray's node module: ``monotonic`` runs ``factor``
    times slower, everything else is the real module."""

    def __init__(self, factor: float) -> None:
        self.factor, self.origin = factor, time.monotonic()

    def monotonic(self) -> float:
        return self.origin + (time.monotonic() - self.origin) / self.factor

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def _node_start_limit(seconds: float) -> Iterator[None]:
    """Ray's wait for a new local node lasts ``seconds`` instead of 30 while the block runs."""
    from ray._private import node as ray_node

    saved = ray_node.time
    ray_node.time = _SlowClock(max(1.0, seconds / RAY_NODE_WAIT_S))  # type: ignore[assignment]
    try:
        yield
    finally:
        ray_node.time = saved


_saved_tmpdir: list[str | None] = []


def _private_temp_root() -> None:
    """Point Ray's temp root (RAY_TMPDIR) at a folder only this user can enter.

    Ray makes its session folders (``sockets/``, ``logs/``, ...) world-writable (0777, no sticky
    bit) so that several users can share ``/tmp/ray``; inside a 0700 folder of the user's own,
    nobody else can reach them. The folder is ``ray-<uid>`` in the temp root Ray would use
    (RAY_TMPDIR, else TMPDIR, else /tmp), reused by later sweeps; if another user owns that name,
    a fresh one is made with :func:`tempfile.mkdtemp`.
    """
    root = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    private = os.path.join(root, f"ray-{os.getuid()}")
    try:
        os.mkdir(private, 0o700)
    except FileExistsError:
        info = os.lstat(private)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            os.chmod(private, 0o700)
        else:  # a file, a link, or another user's folder: not ours to use
            private = tempfile.mkdtemp(prefix="ray-", dir=root)
    _saved_tmpdir.append(os.environ.get("RAY_TMPDIR"))
    os.environ["RAY_TMPDIR"] = private


def _restore_temp_root() -> None:
    if _saved_tmpdir:
        saved = _saved_tmpdir.pop()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def token_path() -> Path | None:
    """The auth token file a local Ray start reads or creates (~/.ray/auth_token), or None when the
    start uses none (token auth off, the token given in RAY_AUTH_TOKEN) or the user names the file
    (RAY_AUTH_TOKEN_PATH: theirs to keep)."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    return Path.home() / ".ray" / "auth_token"


def _private_token() -> None:
    """Create the local Ray's auth token readable by this user alone, before ray.init would create
    it with the umask's mode (0644 in a fresh HOME): the token is what keeps other local users out
    of the loopback ports. Ray's own ``ray get-auth-token --generate`` makes it, run with umask 077;
    a token that exists already is narrowed to 0600 after the start (:func:`_narrow_token`)."""
    path = token_path()
    if path is None or path.exists():
        return
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                   umask=0o077, capture_output=True, timeout=300, check=False)  # fmt: skip


def _narrow_token() -> None:
    path = token_path()
    try:
        if path is not None and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change (another owner); Ray still reads it


def start(address: str | None) -> None:
    """Connect to the cluster at ``address`` (or RAY_ADDRESS), else start a private local one
    that listens on loopback only, keeps its session folders in a folder of this user's own and
    its auth token readable by this user alone.

    Ray waits a fixed 30 s for a new local node to register and then raises a bare Exception; a
    local start waits up to :func:`start_timeout` (SWEEP_RAY_START_TIMEOUT, default 300 s)
    instead, and :class:`StartTimeout` says when even that ran out.
    """
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    local = address == "local"
    if local or _on_loopback(address):
        # A cluster on this machine's loopback (``ray start --head --node-ip-address=127.0.0.1``):
        # Ray would otherwise rewrite 127.0.0.1 to the node's network address and wait minutes
        # for a GCS that does not listen there.
        _loopback(True)
    limit = start_timeout()
    if local:
        _private_temp_root()
        _private_token()
    try:
        with _node_start_limit(limit) if local else nullcontext():
            # log_to_driver=False keeps trainer chatter off the terminal; Tune still prints each
            # trial's error and the path of its full traceback.
            ray.init(
                address=address,
                log_to_driver=False,
                logging_level=logging.WARNING,
                include_dashboard=False if local else None,  # a laptop sweep needs no dashboard
            )
    except Exception as e:
        if "timed out during startup" not in str(e):
            raise
        ray.shutdown()
        raise StartTimeout(f"the local node did not start within {limit:g} s") from None
    if local:
        _narrow_token()


def _on_loopback(address: str) -> bool:
    """Whether a HOST:PORT cluster address names this machine's loopback interface."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def stop() -> None:
    ray.shutdown()
    _loopback(False)
    _restore_temp_root()


RAY_DAEMONS = ("raylet", "gcs_server")  # the local instance's processes whose loss ends it


def _local_daemons() -> list[tuple[str, psutil.Process]]:
    """The raylet and GCS of the Ray instance this driver started (its child processes), by name;
    none when it joined a cluster (``--address``), whose processes are not its own."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() in RAY_DAEMONS:
                found.append((child.name(), child))
        except psutil.Error:  # it ended while being listed
            continue
    return found


def watch_local(on_lost: Callable[[str], None], every: float = 0.5) -> Callable[[], None]:
    """Call ``on_lost(cause)`` from a thread when a process of the local Ray instance this driver
    started dies (a killed raylet or GCS); returns the function that stops watching.

    Ray's core worker ends the driver's process a few seconds after its raylet is lost, without
    returning to Python, so the driver's own clean-up must run from here. Joined clusters
    (``--address``) are not watched: their processes are not this driver's.
    """
    watched = _local_daemons()
    if not watched:
        return lambda: None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            for name, process in watched:
                try:
                    alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
                except psutil.Error:
                    alive = False
                if not alive and not stop.is_set():
                    try:
                        code = process.wait(timeout=0)  # reaps the child: its exit status
                    except (psutil.Error, psutil.TimeoutExpired):
                        code = None
                    on_lost(f"Ray's {name} process died (exit status {code})")
                    return

    threading.Thread(target=loop, name="sweep-ray-watch", daemon=True).start()
    return stop.set


def kill_local() -> None:
    """Kill every process the driver started, Ray's included, at once (after :func:`watch_local`
    saw the local Ray die): nothing is left behind when the driver exits."""
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            continue


def nodes() -> list[dict[str, float]]:
    """Resources of every live node (CPU, GPU, ...)."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


@ray.remote(num_cpus=0)
def _end_worker(pid: int) -> str:
    """SIGKILL a stuck trial's worker on this node, if ``pid`` is still a Ray worker process
    (its process title starts ``ray::``); SIGKILL reaches a stopped process too."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    if not title.startswith(b"ray::"):
        return "not a Ray worker"
    os.kill(pid, signal.SIGKILL)
    return "killed"


def end_worker(pid: int, node_id: str) -> None:
    """End the worker ``pid`` on Ray node ``node_id`` (a task pinned there, so any node of a cluster
    works); Tune then sees its trial fail. Not waited for: Tune's loop goes on."""
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    _end_worker.options(scheduling_strategy=strategy).remote(pid)



@ray.remote
def _call(fn: Callable[[], str]) -> str:
    return fn()


def run_task(fn: Callable[[], str], cfg: SweepConfig) -> str:
    """Run ``fn()`` once as a Ray task with a trial's resources, retried as often as a trial."""
    return ray.get(_as_trial(cfg).remote(fn))


def _as_trial(cfg: SweepConfig) -> Any:
    """The task ``_call`` with a trial's resources and retries."""
    return _call.options(
        num_cpus=cfg.resources.cpus,
        num_gpus=cfg.resources.gpus,
        max_retries=cfg.failure.max_failures,  # -1: forever, as Tune's max_failures
        retry_exceptions=True,  # like a trial: an exception retries too, not only a lost worker
    )


def run_tasks(fns: Sequence[Callable[[], str]], cfg: SweepConfig) -> list[str | Exception]:
    """Run each ``fn()`` as a Ray task with a trial's resources, in parallel, at most
    ``max_concurrent_trials`` at a time (0: as many as the cluster's resources allow, as for the
    trials); each retried as often as a trial. Returns the results in order, an exception in place
    of a task that failed for good, so one failure does not lose the others' work."""
    remote = _as_trial(cfg)
    limit = cfg.max_concurrent_trials or len(fns)
    refs: list[Any] = []
    running: list[Any] = []
    for fn in fns:
        if len(running) >= limit:
            _, running = ray.wait(running, num_returns=1)  # a slot frees when one ends
        refs.append(remote.remote(fn))
        running.append(refs[-1])
    out: list[str | Exception] = []
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayError as e:
            out.append(e)
    return out


