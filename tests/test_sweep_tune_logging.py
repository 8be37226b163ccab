"""sweep.engine.tuner's filter on Tune's experiment-state logger: the temporary-file race is dropped,
every other sync failure still shows."""

from __future__ import annotations

import logging
import sys

from sweep.engine.tuner import _TempFileRace

MESSAGE = "Saving experiment state to storage at '/x/sweep' failed with exception: "


def _record(msg: str, error: BaseException | None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("ray.tune.execution.experiment_state", logging.ERROR, __file__, 1, msg, None, exc_info)


def test_the_temporary_state_file_race_is_dropped_and_real_failures_show():
    race = FileNotFoundError(2, "Failed to open local file '/tmp/ray/a/driver_artifacts/.2c6f-tmp-basic-variant-state-x.json'")
    keep = _TempFileRace()
    assert not keep.filter(_record(MESSAGE, race))
    assert keep.filter(_record(MESSAGE, FileNotFoundError(2, "Failed to open local file '/x/sweep/experiment_state.json'")))
    assert keep.filter(_record(MESSAGE, OSError(28, "No space left on device")))
    assert keep.filter(_record("another message", race))
    assert keep.filter(_record(MESSAGE, None))
    assert any(isinstance(f, _TempFileRace) for f in logging.getLogger("ray.tune.execution.experiment_state").filters)
