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
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(directory)) if directory else None)

    try:
        run_trial(ctx, config, tune.get_context().get_trial_id(), restore, report)
    finally:
        if restore is not None:
            shutil.rmtree(restore, ignore_errors=True)


class _LostCheckpoint:
    """Mixed into the trainable's class: restore when the checkpoint Tune's state names is gone.

    Tune's driver deletes a trial's older checkpoint (``num_to_keep``) when it records a new one,
    but saves its experiment state only every few seconds. A driver killed in between leaves a
    state naming a deleted checkpoint, and a trial that outlives its killed driver on a shared
    cluster can do the same; Tune's restore then fails the trial on every retry ("does not exist
    on storage anymore"). Here the newest checkpoint in the trial's own folder is put where the
    state says, and the trial continues from it; when there is none, an empty folder is, and
    :mod:`sweep.recovery` continues the trial from the ``last.pt`` MLflow holds. Either way the
    named path exists again, so Tune's later deletion of it succeeds.
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
        fs.delete_dir(newest)  # one checkpoint per trial, as num_to_keep says
    with fs.open_output_stream(f"{lost.rstrip('/')}/{LOST_NOTE}") as f:
        f.write(note.encode())


def newest_checkpoint(fs: Any, trial_dir: str) -> str | None:
    """The path of the highest-numbered ``checkpoint_NNNNNN`` folder in ``trial_dir``, or None."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return None
    found = [
        (int(i.base_name.split("_")[1]), i.path)
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory
        and i.base_name.startswith("checkpoint_")
        and i.base_name.split("_")[1].isdigit()
    ]
    return max(found)[1] if found else None


# Private name 4 of 4 (reason: Tune's only hook into the class it wraps a function trainable in; test:
# tests/test_sweep_resume.py checks the mixin sits in that class's MRO).
_trainable.__mixins__ = (_LostCheckpoint,)  # type: ignore[attr-defined]




def trainable_of(cfg: SweepConfig, ctx: SweepContext) -> Any:
    """The sweep's trainable for Tune: :func:`_trainable` with the context and a trial's resources."""
    return tune.with_resources(
        tune.with_parameters(_trainable, ctx=ctx), {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus}
    )
