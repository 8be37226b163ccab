"""Replay benchmark of the search: record a dense grid's learning curves once, replay searches on them.

``python -m sweep.replay record`` trains the grid (:mod:`sweep.replay.record`);
``python -m sweep.replay run`` replays grid, grid + ASHA, random + ASHA and TPE + ASHA against the
recorded table (:mod:`sweep.replay.bench`); ``python -m sweep.replay pick`` chooses the search's
default settings on tuning seeds and reports them on fresh ones (:mod:`sweep.replay.pick`). See
docs/results.md, "Search".
"""
