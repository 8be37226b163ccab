"""The sweep service: Ray Tune over the trainer's λ×μ grid and beyond, tracked in MLflow.

``python -m sweep.run`` is the entry point. ``sweep.config`` is the config schema,
``sweep.config_files`` reads it (presets, ``--set``), ``sweep.points`` expands its points and
``sweep.paths`` resolves where results go; ``sweep.record`` names everything a trial is stored
under; ``sweep.engine`` holds every Ray call (and ``sweep.search`` the searcher) and ``sweep.tracking`` every MLflow write.
"""
