"""Replay benchmark of the search: record a dense grid's learning curves once, replay searches on them.

``python -m sweep.bench.replay record`` trains the grid (:mod:`sweep.bench.replay.record`);
``python -m sweep.bench.replay run`` replays the one-seed grid, the grid with its top 3 replicated,
random + ASHA and TPE + ASHA, each without and with ``search.replicate``, against the recorded table
and scores each choice on training seeds the search never saw (:mod:`sweep.bench.replay.searches`);
``python -m sweep.bench.replay pick`` chooses the search's default settings on tuning seeds and
reports them on fresh ones (:mod:`sweep.bench.replay.pick`). See docs/results.md, "Search".
"""
