"""What the driver prints while the trials run: a line per trial epoch with an ETA, and the stall
watch's lines (a trial silent too long, and with ``trial_timeout`` its end)."""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from sweep.budget import EpochBudget
from sweep.objective import objective_value
from sweep.record import final_status
from sweep.engine.session import end_worker
from sweep.stall import StallWatch
from sweep.trial import SweepContext
from trainer import keys

class Stalls(tune.Callback):
    """Feeds :class:`sweep.stall.StallWatch`: each trial's starts and results, and a look after
    every step of Tune's loop. Pickled with the Tuner, so a resumed sweep keeps its limit."""

    def __init__(self, ctx: SweepContext, timeout: float | None) -> None:
        self.ctx, self.timeout = ctx, timeout
        self.watch = StallWatch(timeout, end_worker, lambda line: print(line, flush=True))

    def setup(self, **info: Any) -> None:
        _STALLS[:] = [self]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.watch.started(trial.trial_id, trial_name(self.ctx, trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.watch.result(trial.trial_id, trial_name(self.ctx, trial.config), result)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.watch.ended(trial.trial_id)  # watched again when it restarts

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.watch.ended(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.watch.ended(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.watch.check()


_STALLS: list[Stalls] = []  # the running fit's watch, for the errors of trials it ended


def stall_error(trial_id: str) -> str | None:
    """Why the running (or last) fit's stall watch ended ``trial_id``, if it did (``trial_timeout``)."""
    return _STALLS[0].watch.error(trial_id) if _STALLS else None


def forget_stalls() -> None:
    """Before a fit: no watch of an earlier one speaks for its trials."""
    _STALLS.clear()



def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class TrialProgress(tune.Callback):
    """One line per trial epoch (at most every ``every`` seconds per trial, always at its end).

    ``  sm λ1e-3 μ1e-4 s0    epoch 2/4  objective 0.677  acc 0.869   [3/10 trials done, ETA ~1 min 10 s]``

    The objective shows ``-`` until the trial's first evaluation (Tune sees the worst value
    before it). The ETA is printed once epochs were measured: the mean wall time between two
    consecutive results of one trial (so a trial's start-up, Ray's and the judge's download, is not
    counted as an epoch), times the epochs left, divided by the trials running side by side. The
    epochs left are those of the trials still to run (``total`` of ``epochs`` each), or with a
    ``budget`` (:class:`sweep.budget.EpochBudget`) the trial-epochs it has left, whichever is fewer.
    """

    def __init__(self, ctx: SweepContext, epochs: int, total: int, every: float = 10.0,
                 budget: EpochBudget | None = None) -> None:
        self.ctx, self.epochs, self.total, self.every, self.budget = ctx, epochs, total, every, budget
        self.ended: set[str] = set()  # trials that completed or failed for good
        self.names: dict[str, str] = {}
        self.last: dict[str, dict[str, Any]] = {}  # trial id -> its last result
        self.evaluated: set[str] = set()
        self.printed: dict[str, float] = {}
        self.started = 0.0
        self.seen_at: dict[str, tuple[int, float]] = {}  # trial id -> its last epoch and when it came
        self.epoch_s: list[float] = []  # measured: wall seconds per epoch between two results of a trial

    def name(self, trial: Any) -> str:
        if trial.trial_id not in self.names:
            self.names[trial.trial_id] = trial_name(self.ctx, trial.config)
        return self.names[trial.trial_id]

    def _eta(self, trials: list) -> str:
        total = max(self.total, len(trials))
        left = sum(self.epochs - int(self.last.get(t.trial_id, {}).get(keys.EPOCH, 0))
                   for t in trials if t.trial_id not in self.ended)
        left += self.epochs * (total - len(trials))  # not created yet (a searcher's later trials)
        if self.budget is not None:  # ASHA stops most trials early: the budget bounds what is left
            left = min(left, self.budget.untrained())
        if not self.epoch_s or not left:
            return ""  # no epoch measured yet: a first result's time is mostly the trial's start-up
        side_by_side = max(1, sum(t.status == "RUNNING" for t in trials))
        return f", ETA ~{_duration(sum(self.epoch_s) / len(self.epoch_s) * left / side_by_side)}"

    def _print(self, trials: list, name: str, text: str) -> None:
        total = max(self.total, len(trials))
        # Trials that ended before a resume are TERMINATED without passing through this callback.
        self.ended |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        print(f"  {name:22s} {text:52s} [{len(self.ended)}/{total} trials done{self._eta(trials)}]", flush=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.started:
            self.started = time.time()
            # A resumed sweep starts with the trials that ended before it (TERMINATED; errored ones
            # run again, resume_errored): they are not to run.
            total = max(self.total, len(trials))
            ended = sum(t.status == "TERMINATED" for t in trials)
            before = f" ({ended} of {total} ended before this resume)" if ended else ""
            print(f"trials: {total - ended} to run{before}; a line per trial epoch (at most every {self.every:.0f} s "
                  "per trial)", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        tid = trial.trial_id
        self.last[tid] = result
        now, epoch = time.time(), int(result.get(keys.EPOCH, 0))
        before = self.seen_at.get(tid)
        if before is not None and epoch > before[0]:
            self.epoch_s.append((now - before[1]) / (epoch - before[0]))
        self.seen_at[tid] = (epoch, now)
        if objective_value(self.ctx.objective, result) is not None:  # an evaluation epoch (or diverged)
            self.evaluated.add(tid)
        ended = result.get(keys.STATUS) in (keys.Status.FINISHED, keys.Status.DIVERGED)
        if ended or time.time() - self.printed.get(tid, 0.0) >= self.every:
            self.printed[tid] = time.time()
            if not ended:
                head = f"epoch {int(result.get(keys.EPOCH, 0))}/{self.epochs}"
                self._print(trials, self.name(trial), self._metrics(tid, head))

    def _metrics(self, tid: str, head: str) -> str:
        result = self.last.get(tid, {})
        objective = f"{result[keys.OBJECTIVE]:.3f}" if tid in self.evaluated and keys.OBJECTIVE in result else "-"
        # Validation accuracy when the trial has a validation split (what selects), else test.
        key, label = (keys.VAL_ACC, "val acc") if keys.VAL_ACC in result else (keys.TEST_ACC, "test acc")
        acc = result.get(key)
        return f"{head}  objective {objective}" + (f"  {label} {acc:.3f}" if isinstance(acc, float) else "")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        result = self.last.get(trial.trial_id, {})
        status = final_status(result.get(keys.STATUS))
        self._print(trials, self.name(trial),
                    self._metrics(trial.trial_id, f"{status} at epoch {int(result.get(keys.EPOCH, 0))}/{self.epochs}"))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.seen_at.pop(trial.trial_id, None)  # its next result comes after a restart, not an epoch
        self._print(trials, self.name(trial), "failed; retrying from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self._print(trials, self.name(trial), "failed (no retries left)")



def trial_name(ctx: SweepContext, config: dict[str, Any]) -> str:
    """The point's display name of a Tune trial config (a grid point's key, or Optuna's sampled point)."""
    return ctx.name_of(ctx.point_of(config))


