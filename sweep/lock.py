"""One driver per sweep name: an exclusive OS lock on a file in the sweep's results folder.

The lock is ``fcntl.flock`` on ``<storage>/<name>/.sweep.lock``, taken without waiting and held
by an open file descriptor for the driver's whole life: the kernel drops it when the process
ends in any way (exit, exception, ``kill -9``, a crashed host's reboot), so a dead driver never
leaves a stuck name. The file holds the holder's pid, host and start time, read back to name the
holder when a second driver is refused. The file itself stays after the driver ends: it marks a
name some driver has started, so a plain rerun is refused and ``--resume`` continues it.

Storage on a remote URI (``s3://...``) has no OS lock; there the sweep relies on one driver per
cluster (the cluster's head runs the jobs).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".sweep.lock"  # inside the sweep's results folder


class LockHeld(RuntimeError):
    """Another live process holds the sweep's lock; the message names it."""


def lock_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / LOCK_FILE


def started(sweep_dir: str) -> bool:
    """Whether a driver ever took this sweep's lock (a local results folder only)."""
    return "://" not in sweep_dir and lock_path(sweep_dir).is_file()


def _holder(fd: int) -> str:
    # The winner writes its record right after flock; give it a moment before reading.
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            info = json.loads(raw)
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "another process (its record is unreadable)"


class SweepLock:
    """The held lock of one sweep; :meth:`release` (or process death) frees it."""

    def __init__(self, fd: int, path: Path, created: list[Path]) -> None:
        self.fd = fd
        self.path = path
        self.created = created  # the lock file and the folders acquire() made, deepest first
        self.existed = not created  # a driver had taken this lock before

    def release(self, discard: bool = False) -> None:
        """Drop the lock; with ``discard``, also remove what :func:`acquire` created (a sweep refused
        before writing anything else leaves nothing behind)."""
        if self.fd < 0:
            return
        if discard:
            for path in self.created:  # still holding the lock, so no other driver uses them
                try:
                    path.unlink() if path == self.path else path.rmdir()
                except OSError:
                    break  # a folder something else wrote into stays
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = -1


def check_free(sweep_dir: str, name: str) -> None:
    """Raise LockHeld if a live driver holds the lock; writes nothing (an existing file is only
    opened for reading)."""
    if not started(sweep_dir):
        return
    fd = os.open(lock_path(sweep_dir), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockHeld(_held_message(name, _holder(fd), lock_path(sweep_dir))) from None
    finally:
        os.close(fd)


def _held_message(name: str, holder: str, path: Path) -> str:
    return f"sweep {name!r} is running already ({holder}; lock {path}); wait for it, stop it, or choose another --name"


def acquire(sweep_dir: str, name: str) -> SweepLock | None:
    """Take sweep ``name``'s lock in ``sweep_dir`` (created if missing) or raise LockHeld at once.

    Returns None for remote storage, where no OS lock exists.
    """
    if "://" in sweep_dir:
        return None
    path = lock_path(sweep_dir)
    created = [p for p in [path, *path.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC (Python's default): Ray's processes started by this driver do not inherit it.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise LockHeld(_held_message(name, holder, path)) from None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return SweepLock(fd, path, created)
