"""A search's budget in trial-epochs, which the driver never exceeds (``search.max_epochs_total``).

A trial-epoch is one epoch of one trial, counted as trained: a trial that restarts from scratch
or from an earlier checkpoint pays again for the epochs it trains again. A trial is started only
when the budget can pay for all of its epochs: every running trial holds what it has trained so
far plus the epochs it may still train (``per_trial`` less the epoch it reached), every ended
trial what it trained. When ASHA stops a trial early the rest of its reservation returns to the
budget and pays for later trials. A trial that ends through any path (finished, stopped,
diverged, failed, or lost by Tune without a word to the searcher, which the watchdog in
:mod:`sweep.search`'s watchdog notices) releases its reservation.

Epochs are counted from the ``epoch`` of each result: a higher epoch than the last adds the
difference (results may be skipped), the same epoch again is a repeat (Tune hands the last result
to the searcher twice), a lower one, or any result after :meth:`EpochBudget.recovering`, is a
restart that trained one more epoch. Only a restart of a trial that restarts at the very epoch it
had reached without a recovery notice escapes the count.

Warm-start trials (:mod:`sweep.warmstart`) were paid for by their own sweep and cost nothing here.
This module is plain bookkeeping; :class:`sweep.search.OptunaSearcher` asks it before each
proposal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class EpochBudget:
    """Trial-epochs reserved and spent by a search's trials."""

    total: int  # trial-epochs the search may spend
    per_trial: int  # epochs one trial trains at most (from a fresh start)
    running: dict[str, int] = field(default_factory=dict)  # trial id -> epoch it last reported
    spent: int = 0  # epochs trained by ended trials
    trained: dict[str, int] = field(default_factory=dict)  # trial id -> epochs trained so far
    restarting: set[str] = field(default_factory=set)  # trials Tune is restarting after a failure
    settled: dict[str, int] = field(default_factory=dict)  # ended trial id -> epochs it trained

    def committed(self) -> int:
        """Epochs spent plus those the running trials trained and may still train."""
        return self.spent + sum(
            self.trained[t] + max(self.per_trial - epoch, 0) for t, epoch in self.running.items()
        )

    def committed_by(self, trial_ids: Iterable[str]) -> int:
        """What :meth:`committed` counts for ``trial_ids`` alone (a part of the search, such as its
        replicates): the epochs the ended ones trained, and the running ones' trained and reserved."""
        out = 0
        for t in trial_ids:
            if t in self.running:
                out += self.trained[t] + max(self.per_trial - self.running[t], 0)
            else:
                out += self.settled.get(t, 0)
        return out

    def left(self) -> int:
        """Trial-epochs not yet committed."""
        return self.total - self.committed()

    def untrained(self) -> int:
        """Trial-epochs not trained yet: at most this many more will be (the ETA's bound)."""
        return max(self.total - self.spent - sum(self.trained.values()), 0)

    def can_start(self) -> bool:
        return self.committed() + self.per_trial <= self.total

    def exhausted(self) -> bool:
        """No trial can start now, and none will: nothing running can hand epochs back."""
        return not self.can_start() and not self.running

    def start(self, trial_id: str) -> None:
        if trial_id in self.running:
            return
        if not self.can_start():
            raise RuntimeError(f"budget of {self.total} trial-epochs cannot pay for trial {trial_id}")
        self.running[trial_id] = 0
        self.trained[trial_id] = 0

    def recovering(self, trial_id: str) -> None:
        """Tune restarts the trial after a failure: its next result is a newly trained epoch."""
        if trial_id in self.running:
            self.restarting.add(trial_id)

    def result(self, trial_id: str, epoch: int | None) -> None:
        """A trial reported ``epoch`` (epochs reached, 1-based)."""
        if trial_id not in self.running or epoch is None:
            return
        epoch, last = int(epoch), self.running[trial_id]
        if trial_id in self.restarting or epoch < last:
            self.restarting.discard(trial_id)
            self.trained[trial_id] += max(epoch - last, 1)
        elif epoch > last:
            self.trained[trial_id] += epoch - last
        self.running[trial_id] = epoch

    def end(self, trial_id: str, epoch: int | None = None) -> None:
        """A trial ended (finished, stopped, diverged or failed), its last result at ``epoch``."""
        if trial_id not in self.running:
            return
        self.result(trial_id, epoch)
        self.running.pop(trial_id)
        self.restarting.discard(trial_id)
        self.settled[trial_id] = self.trained.pop(trial_id)
        self.spent += self.settled[trial_id]
