"""A trial that stops reporting: named in one line, and ended as ``failed: timed out`` past
``trial_timeout``.

A worker stopped (SIGSTOP, a hung collective, a stalled file system) used to be invisible: no
line, the ETA frozen, nothing ended it. :class:`StallWatch` keeps, per running trial, when it last
reported (an epoch's result; its start before the first) and how long its epochs take. It is told
of every start and result by the Tune callback in :mod:`sweep.engine.progress` and asked to look after every
step of Tune's loop (a few times a second).

- **The stall line.** A trial silent for longer than ``STALL_FACTOR`` times its longest epoch so
  far (its results' ``time/epoch_s`` and the gaps between its reports, at least ``STALL_MIN_S``)
  is named once: ``sm λ1e-3 μ1e-4 s0  no report for 4 min 00 s; its last epoch took 20 s``, and
  again with how long it was silent once it reports.
- **The limit.** With ``trial_timeout`` set, a trial silent that many seconds (counted from its
  start, then from each report) is ended: its worker process is killed (``kill`` gets the pid and
  Ray node id of its latest result), Tune sees the trial fail and retries it from its last
  checkpoint as ``failure.max_failures`` allows, and its final error says ``timed out``. A trial
  that has not reported since it started has no known worker yet: its line says so and it is left
  running.

No Ray import here: the callback, the clock and the kill are handed in, so the logic is tested
with a fake clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from trainer import keys

STALL_FACTOR = 5.0  # silent for this many times its longest epoch: named
STALL_MIN_S = 30.0  # ... but never sooner than this (short epochs jitter on a loaded machine)
WORKER_PID = "pid"  # Tune puts the worker's pid into every result
WORKER_NODE = "node_id"  # sweep.engine.trainable adds the worker's Ray node id


def duration(seconds: float) -> str:
    """``4 min 05 s``, ``1 h 02 min``, ``20 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@dataclass
class _Silence:
    """One running trial's reports, as the watch sees them."""

    name: str
    since: float  # its start, then its latest report
    reported: bool = False  # reported since it (re)started
    longest: float = 0.0  # its longest epoch: a result's time/epoch_s or a gap between reports
    last_epoch: float | None = None  # what its latest result says its epoch took
    worker: tuple[int, str] | None = None  # (pid, Ray node id) of its latest result
    named: bool = False  # its stall line is printed
    killed: float | None = None  # silent this long when the limit ended it


class StallWatch:
    """Stall lines and the per-trial time limit (see the module docstring)."""

    def __init__(self, timeout: float | None, kill: Callable[[int, str], None],
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.timeout, self.kill, self.say, self.clock = timeout, kill, say, clock
        self.trials: dict[str, _Silence] = {}
        self.timed_out: dict[str, float] = {}  # trial id -> how long it was silent when ended

    def started(self, trial_id: str, name: str) -> None:
        """A trial (re)started: its silence counts from now (a later failure is not the limit's)."""
        self.trials[trial_id] = _Silence(name, self.clock())
        self.timed_out.pop(trial_id, None)

    def result(self, trial_id: str, name: str, result: dict[str, Any]) -> None:
        """A trial reported an epoch."""
        now = self.clock()
        t = self.trials.setdefault(trial_id, _Silence(name, now))
        if t.named:
            self.say(f"  {t.name:22s} reporting again after {duration(now - t.since)}")
        if t.reported:  # the gap from its start to its first report is start-up, not an epoch
            t.longest = max(t.longest, now - t.since)
        epoch = result.get(keys.EPOCH_SECONDS)
        if isinstance(epoch, (int, float)):
            t.last_epoch = float(epoch)
            t.longest = max(t.longest, float(epoch))
        pid, node = result.get(WORKER_PID), result.get(WORKER_NODE)
        if isinstance(pid, int) and isinstance(node, str):
            t.worker = (pid, node)
        t.since, t.reported, t.named = now, True, False

    def ended(self, trial_id: str) -> None:
        """A trial completed, failed or was stopped: no longer watched."""
        self.trials.pop(trial_id, None)

    def bound(self, trial_id: str) -> float | None:
        """How long the trial may be silent before it is named (None before its first epoch)."""
        t = self.trials[trial_id]
        return max(STALL_MIN_S, STALL_FACTOR * t.longest) if t.longest > 0 else None

    def check(self) -> None:
        """Name each trial silent past its bound; end each one silent past the limit."""
        now = self.clock()
        for trial_id, t in list(self.trials.items()):
            silent = now - t.since
            if self.timeout is not None and silent > self.timeout and t.killed is None:
                self._end(trial_id, t, silent)
                continue
            bound = self.bound(trial_id)
            if not t.named and bound is not None and silent > bound:
                t.named = True
                took = f"; its last epoch took {duration(t.last_epoch)}" if t.last_epoch is not None else ""
                limit = f" (trial_timeout {duration(self.timeout)})" if self.timeout is not None else ""
                self.say(f"  {t.name:22s} no report for {duration(silent)}{took}{limit}")

    def _end(self, trial_id: str, t: _Silence, silent: float) -> None:
        t.killed = silent
        if t.worker is None:
            self.say(f"  {t.name:22s} no report for {duration(silent)} since it started, past trial_timeout "
                     f"{duration(self.timeout or 0)}; its worker is not known before its first epoch, so it is "
                     "left running")  # fmt: skip
            return
        self.timed_out[trial_id] = silent
        self.say(f"  {t.name:22s} failed: timed out (no report for {duration(silent)}, trial_timeout "
                 f"{duration(self.timeout or 0)}); its worker (pid {t.worker[0]}) is ended, and the trial retried "
                 "from its last checkpoint as failure.max_failures allows")  # fmt: skip
        self.kill(*t.worker)

    def error(self, trial_id: str) -> str | None:
        """The error a trial ended by the limit reports instead of Ray's "actor died"."""
        if trial_id not in self.timed_out:
            return None
        return (f"timed out: no report for {duration(self.timed_out[trial_id])} "
                f"(trial_timeout {duration(self.timeout or 0)})")  # fmt: skip
