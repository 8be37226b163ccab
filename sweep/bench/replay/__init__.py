"""Replay benchmark of the search: record a dense grid's learning curves once, replay searches on them.

``python -m sweep.bench.replay record`` trains the grid (:mod:`sweep.bench.replay.record`);
``python -m sweep.bench.replay run`` replays grid, grid + ASHA, random + ASHA and TPE + ASHA against the
recorded table (:mod:`sweep.bench.replay.searches`); ``python -m sweep.bench.replay pick`` chooses the search's
default settings on tuning seeds and reports them on fresh ones (:mod:`sweep.bench.replay.pick`). See
docs/results.md, "Search".
"""
