"""The judges' MLflow runs (experiment ``sweep-judges``): found by the judge's key, created, given
their weights with a checksum, and retired when those weights are lost or corrupt.

A judge is trained once per key and shared by every sweep that asks for it; :mod:`sweep.judge_stage`
decides when to find, train or retire one, and this module is how it writes them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from mlflow.tracking import MlflowClient

from sweep.record import JUDGE_FILE, JUDGES_EXPERIMENT, Tag
from sweep.tracking import ensure_experiment, finish, first_run, git_commit, log_params, search_all, tag_texts


def find_judge(mc: MlflowClient, key: str) -> str | None:
    """The run id of a finished judge with tag ``judge.key = key``, or None."""
    return first_run(mc, JUDGES_EXPERIMENT, f"tags.`{Tag.JUDGE_KEY}` = '{key}' and attributes.status = 'FINISHED'")


def start_judge(mc: MlflowClient, artifact_root: str | None, key: str) -> str:
    """Create the run that will hold judge ``key`` (weights still to come: :func:`store_judge`)."""
    exp_id = ensure_experiment(mc, JUDGES_EXPERIMENT, artifact_root)
    # A driver killed while logging a judge left its run RUNNING without weights: close it.
    for stale in search_all(mc, exp_id, f"tags.`{Tag.JUDGE_KEY}` = '{key}' and attributes.status = 'RUNNING'"):
        finish(mc, stale.info.run_id, failed=True)
    run = mc.create_run(exp_id, run_name=f"judge-{key}", tags=tag_texts({Tag.JUDGE_KEY: key, Tag.COMMIT: git_commit()}))
    return run.info.run_id


def store_judge(mc: MlflowClient, run_id: str, key: str, params: Mapping[str, Any], path: Path) -> None:
    """Log the judge's config and weights (artifact ``judge.pt``) to run ``run_id`` and close it."""
    log_params(mc, run_id, params)
    staged = path.parent / JUDGE_FILE
    if path.name != JUDGE_FILE:
        staged = path.parent / f"stage-{key}" / JUDGE_FILE
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(path.read_bytes())
    mc.set_tag(run_id, str(Tag.JUDGE_SHA256), sha256(staged))  # before the weights: never unverifiable
    mc.log_artifact(run_id, str(staged))
    finish(mc, run_id)


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def judge_checksum(mc: MlflowClient, run_id: str) -> str | None:
    """The sha256 a judge run's ``judge.pt`` was logged with; None for judges logged before the tag."""
    return mc.get_run(run_id).data.tags.get(Tag.JUDGE_SHA256)


def retire_judge(mc: MlflowClient, run_id: str, reason: str) -> None:
    """Mark a judge run whose weights are lost or corrupt FAILED, so :func:`find_judge` skips it."""
    mc.set_tag(run_id, str(Tag.NOTE), f"Retired: {reason}"[:5000])
    finish(mc, run_id, failed=True)
