"""Replay benchmark of the search: record a dense grid's learning curves once, replay searches on them.

``python -m sweep.replay record`` trains the grid (:mod:`sweep.replay.record`);
``python -m sweep.replay run`` replays grid, grid + ASHA, random + ASHA and TPE + ASHA against the
recorded table (:mod:`sweep.replay.bench`). See docs/results.md, "Search".
"""
