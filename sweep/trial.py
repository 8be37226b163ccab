"""One trial: a trainer run tracked in its own MLflow child run, reporting to Tune per epoch.

This module does the work of the Tune trainable without importing Ray: ``sweep.engine.trainable`` passes in
the checkpoint to restore and a ``report(metrics, checkpoint_dir)`` function, so every Ray name
stays in ``sweep.engine``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sweep import recovery, tracking
from sweep.config import ObjectiveConfig
from sweep.judge_stage import fetch_judge
from sweep.objective import objective_interval, objective_value, worst_value
from sweep.points import OPTUNA_DIGITS, POINT_KEY, POINT_SEED, Point, apply_point, point_name, weight_tags
from sweep.record import CURVES, IMAGES, Status, Tag, final_status, items_tag
from trainer import keys
from trainer.config import flatten

STATE_FILE = "sweep_state.json"  # beside the trainer's last.pt in every Tune checkpoint
# The column Tune sees besides the trainer's metrics: the point's display name. POINT_KEY and
# POINT_SEED (sweep.points) are what a Tune config names a point by.
POINT = "point"
__all__ = ["POINT", "POINT_KEY", "POINT_SEED", "STATE_FILE", "SweepContext", "run_trial"]


@dataclass
class SweepContext:
    """Everything a trial needs from the driver; pickled to the workers."""

    sweep: str
    tracking_uri: str
    experiment_id: str
    parent_id: str
    base: dict[str, Any]  # the base trainer config (model_dump), local paths made absolute
    objective: ObjectiveConfig
    judge_run: str | None  # MLflow run holding judge.pt, or None (no GAN-test)
    threads: int  # torch threads per trial
    points: dict[str, Point] = field(default_factory=dict)  # grid: point key -> point
    names: dict[str, str] = field(default_factory=dict)  # grid: point key -> display name, unique
    seed: int = 0  # optuna: the one seed

    def point_of(self, config: Mapping[str, Any]) -> Point:
        """The point of a Tune config: a grid point's key, or Optuna's sampled dotted keys; with
        :data:`POINT_SEED` (a replicate) the same settings with that training seed."""
        seed = config.get(POINT_SEED)
        if POINT_KEY in config:
            point = self.points[config[POINT_KEY]]
            return point if seed is None else Point(point.overrides, int(seed))
        sampled = tuple(sorted((k, v) for k, v in config.items() if k != POINT_SEED))
        return Point(sampled, self.seed if seed is None else int(seed))

    def name_of(self, point: Point) -> str:
        """The point's display name: the grid's unique one (for a replicate of a grid point, that
        name with its seed), else (Optuna) 3 significant digits."""
        if point.key in self.names:
            return self.names[point.key]
        for grid_point in self.points.values():  # a replicate: its grid point's name, another seed
            if grid_point.overrides == point.overrides and grid_point.key in self.names:
                head, sep, tail = self.names[grid_point.key].rpartition(f" s{grid_point.seed}")
                if sep:
                    return f"{head} s{point.seed}{tail}"
        return point_name(apply_point(self.base, point), point, OPTUNA_DIGITS)


def _item_tags(path: str | None, epoch: int) -> dict[str, str]:
    """The tags of an evaluation's ``items.json`` (trainer.items, by metric key), with its epoch."""
    if path is None:
        return {}
    codes = json.loads(Path(path).read_text())
    return {**{items_tag(key): code for key, code in codes.items()}, Tag.ITEMS_EPOCH: str(epoch)}


# What a failed allocation says: PyTorch's CPU allocator ("can't allocate memory ... Error code 12
# (Cannot allocate memory)"), CUDA's ("out of memory"), oneDNN's (a primitive whose scratch memory it
# could not allocate), the C++ runtime's (std::bad_alloc); Python's own raises MemoryError.
_NO_MEMORY = ("can't allocate memory", "cannot allocate memory", "out of memory", "could not create a primitive",
              "bad_alloc")


class OutOfMemory(MemoryError):
    """A trial that failed allocating memory; the message says so and what to change."""


def out_of_memory(error: BaseException) -> str | None:
    """The line a trial fails with when ``error`` (or one it arose from) is a failed allocation,
    e.g. under a memory limit (``ulimit -v``, a container's); None for any other error."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, MemoryError) or any(m in str(seen).lower() for m in _NO_MEMORY):
            said = (str(seen).strip().splitlines() or [""])[0][:300]
            return (f"out of memory: the trial's process could not allocate memory ({type(seen).__name__}: {said}); "
                    "a memory limit on it (ulimit -v, a container's), or a trial larger than its node: lower "
                    "trainer.batch_size, trainer.model.width or trainer.eval.samples")
        seen = seen.__cause__ or seen.__context__
    return None


def _upload_folder(path: Path) -> str:
    return IMAGES if path.suffix == ".png" else CURVES


def run_trial(
    ctx: SweepContext,
    config: Mapping[str, Any],
    trial_id: str,
    restore: Path | None,
    report: Callable[[dict[str, Any], Path | None], None],
) -> dict[str, Any]:
    """Train one point to the end (or until Tune stops it), tracking it in MLflow.

    ``restore`` is the folder of the last Tune checkpoint (the trainer's last.pt and the sweep's
    state), ``report`` hands an epoch's metrics and checkpoint folder to Tune.
    """
    import torch

    from trainer.train import run

    torch.set_num_threads(ctx.threads)
    point = ctx.point_of(config)
    cfg = apply_point(ctx.base, point)
    name = ctx.name_of(point)
    mlrun = tracking.TrialRun(ctx.tracking_uri, ctx.experiment_id, ctx.parent_id, ctx.sweep, point.key)

    work = Path(tempfile.mkdtemp(prefix=f"sweep-trial-{point.key}-"))
    ckpt, best = work / "checkpoint", work / "best"
    ckpt.mkdir()
    best.mkdir()
    state: dict[str, Any] = {"best": None, "objective": worst_value(ctx.objective)}
    # An unreadable or missing checkpoint (when MLflow holds epochs of the point) falls back to
    # MLflow's last.pt, else to a fresh start (its run replaced).
    resumed, note = recovery.restore_checkpoint(restore, ckpt, mlrun)
    if resumed:
        state = recovery.read_state(ckpt / STATE_FILE, state)
    mlrun.open(
        name,
        trial_id,
        flatten(cfg),
        judge=ctx.judge_run,
        selection_split=ctx.objective.split,
        objective=ctx.objective.model_dump_json(),
        from_scratch=not resumed,
        restarted=note,
        shown=weight_tags(cfg),
    )
    if ctx.judge_run:
        cfg.eval.judge = str(fetch_judge(ctx.tracking_uri, ctx.judge_run))
    # Set after the params are logged, like the judge's path: it names the run, it does not configure it.
    cfg.eval.label = name  # every picture's title names its point, so a downloaded file says whose it is

    # The last epoch reported, and the accuracies it logged.
    last: dict[str, Any] = {"status": Status.RUNNING, "reported": False, "accuracy": {}}

    def on_epoch(metrics: dict[str, Any], files: dict[str, str]) -> None:
        epoch, status = int(metrics[keys.EPOCH]), Status(metrics[keys.STATUS])
        last["status"], last["reported"] = status, True
        value = objective_value(ctx.objective, metrics)
        logged = dict(metrics)
        if value is not None:  # logged at evaluation epochs only, so its history is real
            state["objective"] = logged[keys.OBJECTIVE] = value
            interval = objective_interval(ctx.objective, metrics)  # beside it, same step; ranks by value
            state["objective_interval"] = None if interval is None else [interval.lo, interval.hi]
            if interval is not None:
                logged[keys.lo_key(keys.OBJECTIVE)], logged[keys.hi_key(keys.OBJECTIVE)] = interval.lo, interval.hi
        files = dict(files)
        outcomes = files.pop("items", None)  # per-item outcomes: kept as tags, not as a file
        mlrun.log_metrics(logged, step=epoch, tags=_item_tags(outcomes, epoch))
        mlrun.log_files((Path(p), _upload_folder(Path(p))) for p in files.values())
        if status != Status.DIVERGED and (value is not None or status == Status.FINISHED):
            # last.pt at evaluations and at the end: every epoch would upload a ResNet-18
            # (45 MB) 200 times per trial; Tune keeps the per-epoch checkpoint for retries.
            mlrun.log_checkpoint(ckpt / "last.pt")
            if value is not None and (state["best"] is None or value > state["best"]):
                state["best"] = value
                shutil.copyfile(ckpt / "last.pt", best / "best.pt")
                mlrun.log_checkpoint(best / "best.pt", best_objective=value)
        if status == Status.DIVERGED:
            mlrun.set_status(Status.DIVERGED)
        (ckpt / STATE_FILE).write_text(json.dumps(state))
        result = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if status == Status.DIVERGED:
            # The MLflow UI shows a metric's last logged value: the accuracies of the last epoch
            # before the divergence. The driver's summary shows the same, not a dash.
            result.update(last["accuracy"])
        else:
            last["accuracy"] = {  # with their intervals: the summary reports none bare
                k: metrics[k]
                for acc in (keys.VAL_ACC, keys.TEST_ACC)
                for k in (acc, keys.lo_key(acc), keys.hi_key(acc))
                if k in metrics
            }
        result.update({keys.OBJECTIVE: state["objective"], keys.STATUS: str(status), POINT: name})
        if state.get("objective_interval"):  # the latest objective's interval, for the driver's summary
            result[keys.lo_key(keys.OBJECTIVE)], result[keys.hi_key(keys.OBJECTIVE)] = state["objective_interval"]
        report(result, None if status == Status.DIVERGED else ckpt)

    try:
        final = run(cfg, report=on_epoch, checkpoint_dir=ckpt, out_dir=work / "out")
        if not last["reported"] and keys.EPOCH in final:
            # Restored from its final epoch's checkpoint (the driver died before Tune saw the end):
            # the trainer trained nothing, so hand Tune that epoch's result once.
            on_epoch(dict(final), {})
    except SystemExit:
        # Tune ends a trial its scheduler stops (ASHA) by exiting the trial from inside report().
        mlrun.end(final_status(last["status"]))
        raise
    except Exception as e:
        memory = out_of_memory(e)  # said before MLflow is written to, which may need memory too
        try:
            mlrun.end(final_status(None, errored=True))  # a retry reopens the run and marks it running again
        except Exception:
            if memory is None:
                raise  # out of memory, the driver settles the run's status after the trials
        if memory is not None:
            raise OutOfMemory(memory) from e
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mlrun.end(final_status(final.get(keys.STATUS)))
    return final
