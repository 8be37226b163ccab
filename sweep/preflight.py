"""Checks that run before any trial and before anything is written to MLflow.

Each failure is a :class:`PreflightError` whose message names the problem and how to fix it;
``sweep.run`` prints it and exits with status 2. The checks here need neither Ray nor MLflow
writes: the dataset, the tracking server, Ray's address and local limits, the database driver, the
sweep's name and a resumed sweep's config. Whether the trials fit their nodes and GPUs is
:mod:`sweep.resources`; the stores' folders and files, :mod:`sweep.store_checks`.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from sweep.config import SweepConfig
from trainer.config import DataConfig

# Folders torchvision's CIFAR datasets unpack into under data_dir.
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class PreflightError(RuntimeError):
    """The sweep cannot start; the message says why."""


def dataset_url(dataset: str) -> str:
    """Where torchvision downloads ``dataset`` (cifar10 or cifar100) from."""
    from torchvision.datasets import CIFAR10, CIFAR100  # imported only for a download

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset].url


def reachable(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url``'s host answers an HTTP HEAD request, else the reason it does not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError as e:  # the host answered; torchvision's own request decides
        return None if e.code < 500 else f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def check_dataset(data: DataConfig) -> None:
    """CIFAR must be on disk or downloadable; the other datasets ship with the code."""
    folder = CIFAR_FOLDERS.get(data.dataset)
    if folder is None:
        return
    path = Path(data.data_dir) / folder
    if path.is_dir():
        return
    if not data.download:
        raise PreflightError(
            f"trainer.data: {data.dataset} not found at {path.resolve()} and trainer.data.download "
            f"is false; put the dataset there, set trainer.data.data_dir, or --set trainer.data.download=true"
        )
    url = dataset_url(data.dataset)
    reason = reachable(url)
    if reason is not None:
        root = Path(data.data_dir).resolve()
        raise PreflightError(
            f"trainer.data: {data.dataset} is not at {path.resolve()} and cannot be downloaded from {url} "
            f"({reason}); fetch that file on a machine with network and unpack it into {root} "
            f"(tar xzf {url.rsplit('/', 1)[-1]} -C {root} makes {folder}/), or set trainer.data.data_dir"
        )


def check_tracking(uri: str) -> None:
    """An http(s) tracking server must answer; a sqlite file's folder must exist."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                if resp.status != 200:
                    raise PreflightError(f"MLflow tracking server {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PreflightError(
                f"MLflow tracking server {uri} is not reachable ({reason}); start it or fix "
                "tracking.uri / MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise PreflightError(f"tracking.uri: folder {folder} of the MLflow database does not exist")


def check_ray_address(address: str | None) -> None:
    """A HOST:PORT Ray address must accept connections (ray.init would retry for many minutes)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PreflightError(f"--address {address!r} must be auto, local or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise PreflightError(f"--address: no Ray cluster answers at {address} ({e}); start it or fix the address") from None


# Ray's longest socket path under its temp root: <root>/ray/session_<date>_<microseconds>_<pid>/
# sockets/plasma_store, with a 7-digit pid (Linux's largest) -- 68 bytes after the root.
RAY_SOCKET_TAIL = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
SOCKET_PATH_MAX = 107  # bytes of an AF_UNIX socket path on Linux (108 with the final NUL)
# The folder of the user's own the sweep puts Ray's temp root in (sweep.engine.session._private_temp_root):
# /ray-<uid>, or /ray-XXXXXXXX from mkdtemp where that name is taken.
RAY_PRIVATE_ROOT = len("/ray-") + max(len(str(os.getuid())), 8)
# SQLAlchemy's driver module per MLflow database URI scheme -> the pip package that provides it
DB_DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient",
              "pymysql": "PyMySQL", "pyodbc": "pyodbc", "pymssql": "pymssql"}  # fmt: skip


def check_ray_local(address: str | None, environ: Mapping[str, str] | None = None) -> None:
    """A local Ray (no ``--address``) must be able to start: its socket paths under the temp
    folder must fit AF_UNIX's 107 bytes, and its auth token must be writable under HOME."""
    if address and address != "local":
        return
    env = os.environ if environ is None else environ
    limit = env.get("SWEEP_RAY_START_TIMEOUT", "").strip()
    try:
        if limit and not 0 < float(limit) < math.inf:
            raise ValueError(limit)
    except ValueError:
        raise PreflightError(f"SWEEP_RAY_START_TIMEOUT={limit}: must be a positive number of seconds (the "
                             "longest a local Ray may take to start; unset: 300)") from None
    var = "RAY_TMPDIR" if "RAY_TMPDIR" in env else "TMPDIR" if "TMPDIR" in env else None
    root = env[var] if var else "/tmp"
    tail = RAY_PRIVATE_ROOT + RAY_SOCKET_TAIL
    length = len(root.encode()) + tail
    if var and length > SOCKET_PATH_MAX:
        raise PreflightError(
            f"{var}={root} is too long for Ray: its socket paths would be {length} bytes, over the "
            f"{SOCKET_PATH_MAX} a Unix socket allows; set RAY_TMPDIR to a folder of at most "
            f"{SOCKET_PATH_MAX - tail} bytes (e.g. export RAY_TMPDIR=/tmp) or a shorter TMPDIR"
        )
    if env.get("RAY_AUTH_MODE", "token").lower() != "token" or env.get("RAY_AUTH_TOKEN"):
        return
    token = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path(env.get("HOME") or Path.home()) / ".ray" / "auth_token")
    if token.is_file():
        return
    here = token.parent
    while not here.exists() and here != here.parent:
        here = here.parent
    try:  # a probe, not os.access: root passes that on read-only mounts and immutable folders
        os.rmdir(tempfile.mkdtemp(prefix=".sweep-probe-", dir=here))
    except OSError as e:
        raise PreflightError(
            f"Ray writes its auth token to {token}, but {here} is not writable ({e.strerror}); make it "
            "writable, or set HOME to a writable folder"
        ) from None


def check_db_driver(uri: str) -> None:
    """A database tracking URI (postgresql://, mysql://, mssql://) needs its Python driver installed."""
    if not uri.startswith(("postgresql", "mysql", "mssql")):
        return
    try:
        from sqlalchemy.engine import make_url

        make_url(uri).get_dialect().import_dbapi()
    except ModuleNotFoundError as e:
        module = (e.name or "").split(".")[0]
        package = DB_DRIVERS.get(module, module)
        raise PreflightError(
            f"tracking.uri: {uri.split(':', 1)[0]} needs the Python package {package!r}, which is not installed "
            f"(pip install '{package}')"
        ) from None
    except Exception as e:  # noqa: BLE001 - a malformed URL
        raise PreflightError(f"tracking.uri: {uri.split('@')[-1]!r} is not a database URL MLflow can use ({e})") from None


def sqlite_missing(uri: str) -> bool:
    """True when ``uri`` is a sqlite store whose file does not exist yet (so it holds no runs)."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists()


def check_name(name: str, resume: bool, ray_state: bool, parent_id: str | None, where: str) -> None:
    """A new sweep must not reuse a name; ``--resume`` needs something to resume.

    ``ray_state``: Ray results exist or a driver ever took the sweep's lock (``sweep.lock``).
    """
    if not resume and (ray_state or parent_id):
        found = "Ray results at " + where if ray_state else f"MLflow parent run {parent_id}"
        raise PreflightError(
            f"sweep {name!r} already exists ({found}); continue it with --resume or choose "
            "another --name"
        )
    if resume and not ray_state and not parent_id:  # a parent alone: killed before Tune saved state
        raise PreflightError(f"--resume: no sweep {name!r} to resume (no Ray results at {where})")


# Keys a resumed sweep may change. Each says where results go or how the end is reported, never
# what a trial computes or how Tune schedules it:
# - tracking.*: the MLflow store the parent run was just found in (a server's new address, an
#   artifact root moved); the runs continued are the ones found there.
# - analysis: whether Table 2 / the Pareto front are written at the end; the trials are unaffected.
# - confirm.*: the confirmation runs after every trial has ended and selects nothing; a finalist
#   confirmed with other settings (sample seed, samples) is measured again, and its run's tags say
#   what each number was measured on (the parent's params keep the values the sweep started with).
# Everything else is refused: the trainer, search, objective and judge decide what each trial
# computes (mixed results), and Tune restores scheduler, resources and retries from its own saved
# state, so a changed value there would be silently ignored.
RESUMABLE_CHANGES = ("tracking.", "analysis", "confirm.")
NOT_RECORDED = "(not recorded)"


def config_changes(stored: Mapping[str, str], current: Mapping[str, object]) -> list[str]:
    """``key: old -> new`` for every key of the flattened config whose value differs from the
    stored one (the parent run's params: strings, cut at MLflow's 6000 characters)."""
    changes = []
    defaults = _default_config()
    for key in sorted(set(stored) | set(current)):
        if key.startswith(RESUMABLE_CHANGES):
            continue
        if key not in stored and key in defaults and current.get(key) == defaults[key]:
            continue  # a setting added to the schema after the sweep started, left at its default
        old = stored.get(key, NOT_RECORDED)
        new = str(current[key])[:6000] if key in current else NOT_RECORDED
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    return changes


def _default_config() -> dict[str, Any]:
    """The flattened defaults of every sweep setting (as the parent run's params flatten a config)."""
    from trainer.config import flatten

    return flatten(SweepConfig().model_dump(mode="json"))


def check_resume_config(name: str, parent_id: str, stored: Mapping[str, str], current: Mapping[str, object]) -> None:
    """``--resume`` continues the sweep it started: a changed config would mix trials trained with
    different settings under one parent, so any difference refuses it before a trial is touched."""
    if not stored:  # a driver killed between the parent's creation and its params: nothing to compare
        return
    changes = config_changes(stored, current)
    if changes:
        raise PreflightError(
            f"--resume: the config of sweep {name!r} differs from the one it started with (MLflow parent "
            f"run {parent_id}): {'; '.join(changes)}. Resume with the original settings, or start a new "
            "sweep with another --name"
        )


