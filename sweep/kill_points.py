"""A test seam: make the driver die abruptly at a named point, to test resuming from there.

With ``SWEEP_TEST_KILL_AT=<point>`` in its environment the process sends itself SIGKILL when it
reaches that point, exactly as ``kill -9`` or a lost host would end it (no cleanup, no finally
blocks, the OS drops its locks). Tests use it to check that ``--resume`` continues a sweep killed
at every phase boundary; nothing else sets it. The points, in the order a sweep passes them:

``locked``      the sweep's lock is taken; nothing else is written yet
``judge``       the judge's MLflow run is created, its weights not yet logged
``parent``      the sweep's MLflow parent run is created (with its params)
``result``      the driver has received a trial's second epoch (the first one's checkpoint is
                in Tune's state when TUNE_GLOBAL_CHECKPOINT_S=0)
``fitted``      Ray Tune has finished every trial; nothing is settled in MLflow yet
``confirm``     the confirmation stage has logged its first finalist's ``confirm/*`` numbers;
                the other finalists are not confirmed yet
``analysis``    the analysis is written; the parent run is not closed yet
"""

from __future__ import annotations

import os
import signal

ENV_KILL_AT = "SWEEP_TEST_KILL_AT"
POINTS = ("locked", "judge", "parent", "result", "fitted", "confirm", "analysis")


def kill_point(name: str) -> None:
    """SIGKILL this process if ``SWEEP_TEST_KILL_AT`` names ``name``."""
    if os.environ.get(ENV_KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
