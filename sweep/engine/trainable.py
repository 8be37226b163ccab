"""What a trial's worker imports: the Tune trainable around :func:`sweep.trial.run_trial`.

Kept apart so that a worker imports neither Optuna nor the analysis: its imports are Ray Tune,
:mod:`sweep.trial` (the trainer, MLflow tracking) and :mod:`sweep.recovery`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

# Private name 3 of 4 (reason: the exact test Tune's restore fails on; no public one; test:
# tests/test_sweep_resume.py and the kill -9 resume test in tests/test_sweep_kill.py).
from ray.train._internal.storage import _exists_at_fs_path

from sweep.config import SweepConfig
from sweep.recovery import LOST_NOTE
from sweep.stall import WORKER_NODE
from sweep.trial import SweepContext, run_trial

def _trainable(config: dict[str, Any], ctx: SweepContext) -> None:
    checkpoint = tune.get_checkpoint()
    restore = None
    if checkpoint is not None:
        restore = Path(tempfile.mkdtemp(prefix="sweep-restore-"))
        checkpoint.to_directory(str(restore))
    node = ray.get_runtime_context().get_node_id()  # with Tune's own "pid": where a stuck worker runs

    def report(metrics: dict[str, Any], directory: Path | None) -> None:
        metrics = {**metrics, WORKER_NODE: node}
        if directory is None:
            tune.report(metrics)
            return
        try:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(directory)))
        finally:  # also when Tune's scheduler ends the trial inside report (SystemExit)
            drop_older(tune.get_checkpoint())

    try:
        run_trial(ctx, config, tune.get_context().get_trial_id(), restore, report)
    finally:
        if restore is not None:
            shutil.rmtree(restore, ignore_errors=True)


class _LostCheckpoint:
    """Mixed into the trainable's class: restore when the checkpoint Tune's state names is gone.

    A trial deletes its older checkpoints as soon as Tune has recorded a newer one
    (:func:`drop_older`), but Tune saves its experiment state only every 10 s or more. A driver
    killed in between (the usual case after a ``kill -9``, not a rare race) leaves a state naming
    a deleted checkpoint, and a trial that outlives its killed driver on a shared cluster does the
    same; Tune's restore would then fail the trial on every retry ("does not exist on storage
    anymore"). Here the newest checkpoint in the trial's own folder is put where the state says,
    and the trial continues from it: its last epoch, newer than what the state knew. When there is
    none, an empty folder is, and :mod:`sweep.recovery` continues the trial from the ``last.pt``
    MLflow holds.
    """

    def restore(self, checkpoint_path: Any) -> Any:
        checkpoint = getattr(checkpoint_path, "checkpoint", None)
        # The very test Tune's restore fails on (Ray's own helper; Ray is pinned to 2.60.x).
        if checkpoint is not None and not _exists_at_fs_path(checkpoint.filesystem, checkpoint.path):
            _replace_lost(checkpoint.filesystem, checkpoint.path)
        return super().restore(checkpoint_path)  # type: ignore[misc]


def _replace_lost(fs: Any, lost: str) -> None:
    """Fill the missing folder ``lost`` with the trial folder's newest checkpoint (moved), or leave
    it empty; a note in it (``recovery.LOST_NOTE``) says which, for the trial's MLflow run."""
    import pyarrow.fs

    newest = newest_checkpoint(fs, os.path.dirname(lost))
    note = f"the Tune checkpoint {os.path.basename(lost)} of this trial was gone; " + (
        f"continued from {os.path.basename(newest)}" if newest else "none was left in its folder"
    )
    fs.create_dir(lost)
    if newest is not None:
        pyarrow.fs.copy_files(newest, lost, source_filesystem=fs, destination_filesystem=fs)
        fs.delete_dir(newest)  # moved, not copied: one checkpoint per trial (drop_older)
    with fs.open_output_stream(f"{lost.rstrip('/')}/{LOST_NOTE}") as f:
        f.write(note.encode())


def _checkpoints(fs: Any, trial_dir: str) -> list[tuple[int, str]]:
    """The ``checkpoint_NNNNNN`` folders Tune wrote in ``trial_dir``: (index, path) pairs."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return []
    return [
        (int(i.base_name.split("_")[1]), i.path)
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory
        and i.base_name.startswith("checkpoint_")
        and i.base_name.split("_")[1].isdigit()
    ]


def newest_checkpoint(fs: Any, trial_dir: str) -> str | None:
    """The path of the highest-numbered ``checkpoint_NNNNNN`` folder in ``trial_dir``, or None."""
    found = _checkpoints(fs, trial_dir)
    return max(found)[1] if found else None


def drop_older(checkpoint: Any) -> None:
    """Delete every checkpoint folder beside ``checkpoint`` (the trial's newest, which Tune has
    recorded: a report returns only then), so a trial keeps one on storage.

    Tune keeps them all (``num_to_keep=None``, see :data:`sweep.engine.tuner.CHECKPOINTS`): its own
    deletion would make it save the whole experiment state after every checkpoint of every trial.
    A folder left by a failed deletion, or by a killed run of the trial, goes at the next report.
    """
    if checkpoint is None:
        return
    fs, keep = checkpoint.filesystem, os.path.basename(checkpoint.path.rstrip("/"))
    for _, path in _checkpoints(fs, os.path.dirname(checkpoint.path.rstrip("/"))):
        if os.path.basename(path) != keep:
            try:
                fs.delete_dir(path)
            except OSError:  # gone already, or storage unreachable for now: the next report retries
                pass


# Private name 4 of 4 (reason: Tune's only hook into the class it wraps a function trainable in; test:
# tests/test_sweep_resume.py checks the mixin sits in that class's MRO).
_trainable.__mixins__ = (_LostCheckpoint,)  # type: ignore[attr-defined]




def trainable_of(cfg: SweepConfig, ctx: SweepContext) -> Any:
    """The sweep's trainable for Tune: :func:`_trainable` with the context and a trial's resources."""
    return tune.with_resources(
        tune.with_parameters(_trainable, ctx=ctx), {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    )
