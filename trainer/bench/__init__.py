"""The trainer's benchmarks: step costs, precision and gradient-norm checks, whole-trial throughput
(:mod:`trainer.bench.measures`), and their command line, ``python -m trainer.bench``."""
