"""The lab: benchmarks of the service and the search's replay. The service imports nothing from here.

- ``python -m sweep.bench.quickstart``: the quickstart's wall time, the driver's overhead per trial,
  and ASHA's epochs against the grid's.
- ``python -m sweep.bench.replay record|run|pick``: the search measured on recorded learning curves
  (:mod:`sweep.bench.replay`).
- ``python -m sweep.bench.live_search``: the same searches live, through Ray, MLflow and the
  trainer, beside the recorded table.
"""
