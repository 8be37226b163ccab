"""Where a retried or resumed trial continues from, when its checkpoint may be unusable.

Tune hands a restarted trial the last checkpoint the driver recorded. A file there that cannot be
read (truncated by a full disk, corrupted in storage) would fail the trial at every retry and
every ``--resume``, forever. Instead the trial falls back to the previous good checkpoint, the
``checkpoints/last.pt`` it uploaded to MLflow at its last evaluation, and when that one is
missing or unreadable too, it starts again from scratch. Each fallback is recorded in the trial's
MLflow tag ``trial.restarted``.

A trial Tune hands no checkpoint at all is usually new. But when the driver was killed after a
trial logged epochs and before Tune saved its state again (it saves every 10 s or more, not at
each checkpoint: ``sweep.engine.tuner.CHECKPOINTS``), the resumed Tune does not know those
epochs; a resumed Optuna search then proposes the same point again (its sampler restored from
the same saved state). When the point's MLflow run already holds epochs, the trial continues from
that run's ``last.pt`` the same way instead of replacing the run (without this, the run is
replaced and its epochs trained again: tests/test_sweep_checkpoints.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sweep import tracking
from sweep.record import LAST_CHECKPOINT
from trainer.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint


def _epoch(path: Path) -> int:
    """The epoch of a readable training checkpoint; CheckpointError otherwise."""
    return int(load_checkpoint(path)["epoch"])


def _from_mlflow(mlrun: tracking.TrialRun, target: Path, run: Any = None) -> tuple[int | None, str]:
    """Download the run's MLflow last.pt to ``target``; its epoch (None if unusable) and a note.
    ``run``: the point's MLflow run if already looked up (an ``mlflow.entities.Run``)."""
    run = run or mlrun.find()
    if run is None:
        return None, "no MLflow run to fall back to"
    with tempfile.TemporaryDirectory(prefix="sweep-fallback-") as tmp:
        try:
            local = tracking.download(mlrun.mc, run.info.run_id, LAST_CHECKPOINT, Path(tmp))
            epoch = _epoch(local)
        except CheckpointError as e:
            return None, f"MLflow's {LAST_CHECKPOINT} is unusable too ({e})"
        except Exception as e:  # noqa: BLE001 (a missing artifact raises per store: OSError, MlflowException, ...)
            return None, f"MLflow holds no usable {LAST_CHECKPOINT} ({type(e).__name__})"
        shutil.copyfile(local, target)
    return epoch, f"continued from MLflow's {LAST_CHECKPOINT} (epoch {epoch})"


# Written by sweep.engine.trainable into a Tune checkpoint folder it had to replace (the one Tune's saved state
# named was gone): why, and from which checkpoint. Read and removed here, so the trial's run says it.
LOST_NOTE = "sweep_lost_checkpoint.txt"


def restore_checkpoint(restore: Path | None, ckpt: Path, mlrun: tracking.TrialRun) -> tuple[bool, str | None]:
    """Fill ``ckpt`` (an empty folder) with the checkpoint to continue from.

    Returns ``(resumed, note)``: ``resumed`` is False when the trial starts from scratch (``ckpt``
    left empty), ``note`` says why the trial does not simply continue from ``restore`` (None when
    it does, or when it is new: no ``restore`` and no epochs of its point in MLflow).
    """
    if restore is None:
        return _without_tune_checkpoint(ckpt, mlrun)
    shutil.copytree(restore, ckpt, dirs_exist_ok=True)
    lost = ckpt / LOST_NOTE
    replaced = lost.read_text().strip() if lost.is_file() else None
    lost.unlink(missing_ok=True)  # not carried into the trial's next checkpoints
    try:
        _epoch(ckpt / CHECKPOINT)
        return True, replaced
    except CheckpointError as e:
        problem = f"{replaced}; " if replaced else ""
        problem += f"Tune checkpoint unusable ({e})"
    (ckpt / CHECKPOINT).unlink(missing_ok=True)
    epoch, note = _from_mlflow(mlrun, ckpt / CHECKPOINT)
    if epoch is not None:
        return True, f"{problem}; {note}"
    for child in ckpt.iterdir():  # nothing usable: start from scratch, with no stale state either
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return False, f"{problem}; {note}; started again from scratch"


def _without_tune_checkpoint(ckpt: Path, mlrun: tracking.TrialRun) -> tuple[bool, str | None]:
    """Tune has no checkpoint for this trial: continue from MLflow's last.pt if the point's run
    already holds epochs (see the module's docstring), else start fresh (a new trial: no note)."""
    run = mlrun.find()
    if run is None or mlrun.last_epoch(run.info.run_id) == 0:
        return False, None
    problem = "Tune held no checkpoint of the epochs MLflow holds"
    epoch, note = _from_mlflow(mlrun, ckpt / CHECKPOINT, run)
    if epoch is not None:
        return True, f"{problem}; {note}"
    return False, f"{problem}; {note}; started again from scratch"


def read_state(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    """The sweep's per-trial state saved beside the checkpoint, or ``default`` if missing or unreadable."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return dict(default)
    return state if isinstance(state, dict) else dict(default)
