"""Where a sweep's results go: the tracking URI, the artifact root and Ray's storage path.

Environment variables a cluster sets win over the config, so every sweep on it lands in shared
places; local paths are made absolute because Tune runs each trial in its own folder.

This module imports no other module of ``sweep`` at run time, so the MLflow writer
(``sweep.tracking``) can use it without depending on the driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type hints only: importing the config schema here would tie the record to it
    from sweep.config import SweepConfig

# Environment variables a cluster sets so every sweep lands in shared places.
ENV_STORAGE = "SWEEP_STORAGE_PATH"  # Ray results (and the Optuna study): an s3:// or NFS path
ENV_TRACKING = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the tracking server


def resolve_tracking_uri(cfg: SweepConfig, cwd: Path | None = None) -> str:
    """The tracking URI every process uses: env first, relative sqlite paths made absolute."""
    uri = os.environ.get(ENV_TRACKING) or cfg.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((cwd or Path.cwd()) / uri[len(prefix):])
    elif "://" not in uri:  # a bare path is a file store; make it absolute too
        uri = str((cwd or Path.cwd()) / uri)
    return uri


def resolve_artifact_root(cfg: SweepConfig, cwd: Path | None = None) -> str:
    """Artifact root for new experiments on a local store, as an absolute URI."""
    root = cfg.tracking.artifacts
    if "://" in root:
        return root
    return ((cwd or Path.cwd()) / root).resolve().as_uri()


def resolve_storage_path(cfg: SweepConfig, cwd: Path | None = None) -> str:
    """Ray's storage path: env SWEEP_STORAGE_PATH first, local paths made absolute."""
    path = os.environ.get(ENV_STORAGE) or cfg.storage_path
    if "://" in path:
        return path
    return str(((cwd or Path.cwd()) / path).resolve())
