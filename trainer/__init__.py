"""The paper's regularized training as a plain PyTorch library.

``trainer.run(cfg, report=..., checkpoint_dir=...)`` trains one model and returns its
metrics. This package imports neither ray, optuna nor mlflow.
"""

from trainer.config import ConfigError, TrainConfig, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config", "run"]


def __getattr__(name: str):
    # Imported lazily so that reading a config does not import torch.
    if name == "run":
        from trainer.train import run

        return run
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
