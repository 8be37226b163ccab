"""Every Ray call of the service, in one package (Ray's API moves fast: the next change is an edit here).

- :mod:`sweep.engine.session`: Ray's session: a private local Ray on loopback or a joined cluster,
  its start limit, token and session folders, the watch on its processes, one-off tasks.
- :mod:`sweep.engine.tuner`: the Tuner over the sweep's points, restore, its results.
- :mod:`sweep.engine.trainable`: what a trial's worker imports: the trainable around
  :func:`sweep.trial.run_trial` (no Optuna, no analysis).
- :mod:`sweep.engine.progress`: the live lines of the trials and the stall watch.
- :mod:`sweep.engine.watchdog`: the Optuna search's watchdog (its budget kept true to what Tune
  did, a sweep that idles ended).
- :mod:`sweep.engine.storage`: the filesystem Tune writes a local storage path with (each file
  replaced whole, so a killed driver never leaves a half-written state).

Ray 2.60 runs Train V2, where ``ray.train.report`` fails inside Tune. So inside trials only
``ray.tune.report``, ``ray.tune.get_checkpoint``, ``ray.tune.get_context`` and
``ray.tune.Checkpoint`` are used. This package's ``__init__`` imports no Ray: it sets the
environment Ray reads when it is imported.
"""

from __future__ import annotations

import os

# Progress is printed by this module's Tune callback (TrialProgress), so Tune's own output is off
# (verbose=0, and the classic output, which honours it).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

# How long a local Ray may take to start (seconds): Ray's own limits (30 s for the node, 60 s for
# its dashboard process) are met on a busy machine, where a start takes minutes but succeeds.
START_TIMEOUT_ENV = "SWEEP_RAY_START_TIMEOUT"
DEFAULT_START_TIMEOUT_S = 300.0


def start_timeout() -> float:
    """The local Ray's start limit in seconds: SWEEP_RAY_START_TIMEOUT, else 300 (ValueError when
    it is not a positive number; the preflight says so first)."""
    raw = os.environ.get(START_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_START_TIMEOUT_S
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{START_TIMEOUT_ENV} must be a positive number of seconds, not {raw!r}")
    return value


# Read by Ray when it is imported: its dashboard process (which a local sweep does not use) then
# gets as long to start as the node, instead of failing after 60 s on a busy machine.
try:
    os.environ.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", str(int(start_timeout())))
except ValueError:  # refused by the preflight before Ray starts
    pass
