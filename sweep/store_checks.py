"""Preflight of the places a sweep writes: the MLflow store, its artifact root, Ray's storage.

Each check reads only (``os.access``, a read-only SQLite open; a read-write one only to let SQLite
roll back a journal that a process killed mid-write left), so a refused sweep leaves nothing
behind, and each finishes in well under a second: MLflow itself would retry an unusable sqlite
file for about a minute (its engine retries sleep 0.1 s, 0.3 s, ... 51 s) and an unreachable
server for minutes, then print a traceback. A failure is a :class:`PreflightError` with one line
naming the path and the fix.

After a failure before any trial, :func:`discard_new_store` removes the local store this run
created if nothing was written to it, so the folder is as it was.

It also bounds MLflow's HTTP retries for the driver and the local Ray workers it starts (they
inherit its environment), unless the user set them: a server that goes away mid-sweep then fails a
request in about a minute instead of about four.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.paths import resolve_artifact_root, resolve_tracking_uri
from sweep.preflight import PreflightError
from sweep.record import JUDGES_EXPERIMENT, Tag

if TYPE_CHECKING:
    from sweep.config import SweepConfig

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# MLflow's HTTP client: 4 retries with backoff factor 1 (1+2+4+8 s) and 30 s per request; MLflow's
# defaults are 7 retries, factor 2 and 120 s.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def bound_http_retries() -> None:
    """Set MLflow's HTTP retry limits in this process's environment, where the user has not."""
    for var, value in HTTP_LIMITS.items():
        os.environ.setdefault(var, value)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder_writable(path: Path, what: str, fix: str) -> None:
    """``path`` (or, if missing, the nearest folder above it, where it would be created) is writable."""
    here = _existing_ancestor(path)
    if not here.is_dir():
        raise PreflightError(f"{what}: {here} is not a folder; {fix}")
    if not os.access(here, os.W_OK | os.X_OK):
        raise PreflightError(f"{what}: folder {here} is not writable; {fix}")
    if here != path:  # it will be created: try (root passes os.access even where mkdir fails, /proc)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".sweep-probe-", dir=here))
        except OSError as e:
            raise PreflightError(f"{what}: {path} cannot be created in {here} ({e.strerror}); {fix}") from None


def check_sqlite(uri: str) -> None:
    """A ``sqlite:///`` store: its folder exists and is writable; an existing file is a readable,
    writable SQLite database."""
    path = Path(uri[len("sqlite:///"):])
    fix = "fix its permissions or point tracking.uri / MLFLOW_TRACKING_URI elsewhere"
    if not path.parent.is_dir():
        raise PreflightError(f"tracking.uri: folder {path.parent} of the MLflow database does not exist")
    # sqlite writes a journal beside the file, so its folder must be writable even when it exists.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PreflightError(f"tracking.uri: folder {path.parent} of the MLflow database is not writable; {fix}")
    if not path.exists():
        return
    if not path.is_file():
        raise PreflightError(f"tracking.uri: {path} is not a file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise PreflightError(f"tracking.uri: MLflow database {path} is not readable and writable; {fix}")
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return  # an empty file: sqlite treats it as a new database
    if head != SQLITE_HEADER:
        raise PreflightError(f"tracking.uri: {path} is not an SQLite database; move it away or use another tracking.uri")
    try:
        _read_schema(path, "ro")
    except sqlite3.OperationalError as e:
        if "readonly" not in str(e) or not path.with_name(path.name + "-journal").exists():
            raise PreflightError(f"tracking.uri: MLflow database {path} cannot be read ({e})") from None
        # A hot journal: a process (an interrupted driver still exiting, a killed worker) ended in
        # the middle of a write. Only a writer may roll it back, so a read-only open fails with
        # "attempt to write a readonly database"; a read-write open makes SQLite restore the last
        # committed state, as MLflow's own first connection would. Nothing new is written.
        try:
            _read_schema(path, "rw", timeout=15)
        except sqlite3.DatabaseError as e:
            raise PreflightError(f"tracking.uri: MLflow database {path} cannot be read ({e})") from None
    except sqlite3.DatabaseError as e:
        raise PreflightError(f"tracking.uri: MLflow database {path} cannot be read ({e})") from None


def _read_schema(path: Path, mode: str, timeout: float = 5) -> None:
    """Open the SQLite file in ``mode`` (ro, rw), waiting up to ``timeout`` s for a writer's lock,
    and read its schema version (raises sqlite3.DatabaseError when it cannot)."""
    con = sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True, timeout=timeout)
    try:
        con.execute("PRAGMA schema_version").fetchone()
    finally:
        con.close()


def check_tracking_store(uri: str, artifact_root: str | None) -> None:
    """The local parts of the MLflow store: the sqlite file or file-store folder, the artifact root."""
    if uri.startswith("sqlite:///"):
        check_sqlite(uri)
    elif "://" not in uri or uri.startswith("file://"):
        folder = Path(uri.removeprefix("file://"))
        check_folder_writable(folder, "tracking.uri", "fix its permissions or use another tracking.uri")
    if artifact_root and artifact_root.startswith("file://"):
        from urllib.parse import unquote, urlparse

        check_folder_writable(
            Path(unquote(urlparse(artifact_root).path)), "tracking.artifacts", "fix its permissions or set tracking.artifacts"
        )


def check_storage(storage: str) -> None:
    """Ray's local storage path (or the nearest folder above it) is writable."""
    if "://" in storage:
        return
    check_folder_writable(Path(storage), "storage_path", "fix its permissions or set storage_path / SWEEP_STORAGE_PATH")


def store_files(cfg: SweepConfig) -> set[Path]:
    """The files and folders of a local sqlite MLflow store (its database, the lock beside it, the
    artifact root) that exist now."""
    uri = resolve_tracking_uri(cfg)
    if not uri.startswith("sqlite:///"):
        return set()
    db = Path(uri[len("sqlite:///"):])
    paths = [db, Path(f"{db}.lock")]
    root = resolve_artifact_root(cfg)
    if root.startswith("file://"):
        paths.append(Path(root[len("file://"):]))
    return {p for p in paths if p.exists()}


def discard_new_store(cfg: SweepConfig, uri: str, before: set[Path], since: float) -> str:
    """After a failure before any trial that kept no sweep: remove the local MLflow store this run
    created when no run was written to it, so the folder is as it was; returns what was kept, in
    words ("kept nothing", or the judge it trained and where). ``uri``: the MLflow store's tracking
    URI; ``since``: when this run started."""
    from sweep import tracking

    try:
        mc = tracking.client(uri)
        experiments = [e.experiment_id for e in mc.search_experiments()]
        new = mc.search_runs(experiments, f"attributes.start_time >= {int(since * 1000)}") if experiments else []
    except Exception:  # noqa: BLE001 - the store may be what failed
        return f"kept nothing of the sweep (the MLflow store {uri} is left as it is)"
    judges = [r for r in new if r.data.tags.get(Tag.JUDGE_KEY) and r.info.status == "FINISHED"]
    if judges:
        return (f"kept only the judge it trained (MLflow experiment '{JUDGES_EXPERIMENT}', run "
                f"{judges[0].info.run_id}), which the next start reuses")
    if new:
        return f"kept nothing of the sweep ({len(new)} unfinished run(s) of its judge stage stay in {uri})"
    # Deepest first: the database and its lock file, then the artifact root if still empty.
    created = sorted(store_files(cfg) - before, key=lambda p: len(p.parts), reverse=True)
    for path in created:
        try:
            path.rmdir() if path.is_dir() else path.unlink()
        except OSError:  # a folder something else wrote into stays
            pass
    left = [str(p) for p in created if p.exists()]
    return f"kept nothing (left: {', '.join(left)})" if left else "kept nothing"


def nothing_kept(cfg: SweepConfig, uri: str, sweep_dir: str, parent_id: str | None) -> bool:
    """Whether a sweep that crashed left neither an MLflow parent run (``parent_id``, or one found
    in ``uri``) nor Ray state in ``sweep_dir`` (its lock's mark alone would make the name look taken)."""
    from sweep import tracking
    from sweep.engine import tuner

    if parent_id is not None or tuner.can_restore(sweep_dir):
        return False
    try:
        return tracking.find_parent(tracking.client(uri), cfg.experiment_name, cfg.name) is None
    except Exception:  # noqa: BLE001 - the store may be what failed: keep the mark then
        return False
