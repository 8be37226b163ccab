"""The search's watchdog: a Tune callback and stopper beside :class:`sweep.search.OptunaSearcher`.

It keeps the searcher's epoch budget true to what Tune did and ends a sweep that idles (nothing runs,
nothing is proposed). It lives in the engine because it is a Tune callback (Ray's API is used only
there and in the searcher's base class).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray import tune

from sweep.search import OptunaSearcher


LIVE = ("PENDING", "RUNNING", "PAUSED")  # Tune's trial statuses of a trial not yet ended


ENDED = ("TERMINATED", "ERROR")


class Watchdog(tune.Callback, tune.stopper.Stopper):
    """Keeps an Optuna search's budget true to what Tune did, and ends a sweep that idles.

    After every step of Tune's loop it settles the trials Tune ended without telling the searcher
    (a failed actor reuse ends a trial that way; :meth:`OptunaSearcher.release_lost`), and
    it tells the budget when Tune restarts a trial. When nothing runs and the searcher proposes
    nothing for ``idle_s`` seconds although the budget can pay for a trial, it prints a line and
    stops the sweep (as Tune's stopper) instead of waiting forever.
    """

    def __init__(self, searcher: OptunaSearcher, idle_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.searcher, self.idle_s, self.clock = searcher, idle_s, clock
        self.idle_since: float | None = None
        self.fired = False

    def setup(self, **info: Any) -> None:
        _WATCHDOG[:] = [self]  # Tune calls it at a fit's start, a restored one's too

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.searcher.budget is not None:
            self.searcher.budget.recovering(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        ended = {t.trial_id: (dict(t.last_result or {}), t.status == "ERROR") for t in trials if t.status in ENDED}
        for trial_id in self.searcher.release_lost(ended):
            print(f"  trial {trial_id} ended without a result for the searcher; its epochs are settled", flush=True)
        budget = self.searcher.budget
        if any(t.status in LIVE for t in trials) or (budget is not None and not budget.can_start()):
            self.idle_since = None
            return
        now = self.clock()
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= self.idle_s and not self.fired:
            self.fired = True
            left = f"{budget.left()} of {budget.total} trial-epochs left" if budget is not None else "no budget set"
            print(f"search: nothing has run for {now - self.idle_since:.0f} s and the searcher proposes nothing "
                  f"({left}); ending the sweep", flush=True)

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # stops no single trial

    def stop_all(self) -> bool:
        return self.fired


_WATCHDOG: list[Watchdog] = []  # the last fit's watchdog


def watchdog_fired() -> bool:
    """Whether the last fit's watchdog ended it (nothing ran, nothing was proposed)."""
    return bool(_WATCHDOG) and _WATCHDOG[0].fired


def forget_watchdog() -> None:
    """Before a fit: no watchdog of an earlier one speaks for it."""
    _WATCHDOG.clear()
