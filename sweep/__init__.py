"""The sweep service: Ray Tune over the trainer's λ×μ grid and beyond, tracked in MLflow.

``python -m sweep.run`` is the entry point; ``sweep.config`` holds the validated sweep config,
``sweep.tune`` every Ray call, ``sweep.tracking`` every MLflow write.
"""
