"""A search's budget in trial-epochs, which the driver never exceeds (``search.max_epochs_total``).

A trial-epoch is one epoch of one trial. A trial is started only when the budget can pay for
all of its epochs: every running trial holds ``per_trial`` epochs (``cfg.max_epochs``, the most
it can train), every ended trial the epochs it reached. When ASHA stops a trial early the rest
of its reservation returns to the budget and pays for later trials. So the epochs trained,
counted by the epoch each trial reached, never exceed the budget, whatever the scheduler does.

Warm-start trials (:mod:`sweep.warmstart`) were paid for by their own sweep and cost nothing here.
This module is plain bookkeeping; :class:`sweep.tune.ResumableOptunaSearch` asks it before each
proposal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EpochBudget:
    """Trial-epochs reserved and spent by a search's trials."""

    total: int  # trial-epochs the search may spend
    per_trial: int  # epochs one trial trains at most
    running: dict[str, int] = field(default_factory=dict)  # trial id -> epochs reached so far
    spent: int = 0  # epochs reached by ended trials

    def committed(self) -> int:
        """Epochs spent plus those the running trials may still train."""
        return self.spent + self.per_trial * len(self.running)

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

    def result(self, trial_id: str, epoch: int | None) -> None:
        """A trial reported ``epoch`` (epochs reached, 1-based)."""
        if trial_id in self.running and epoch is not None:
            self.running[trial_id] = max(self.running[trial_id], int(epoch))

    def end(self, trial_id: str, epoch: int | None = None) -> None:
        """A trial ended (finished, stopped, diverged or failed) having reached ``epoch``."""
        if trial_id not in self.running:
            return
        self.result(trial_id, epoch)
        self.spent += min(self.running.pop(trial_id), self.per_trial)
