"""The judge stage: one GAN-test judge per dataset and judge config, stored in MLflow.

Before any trial starts the driver looks for a finished run tagged ``judge.key = <key>`` in the
MLflow experiment ``judges``; if there is none it trains the judge once and logs it there as
artifact ``judge.pt``. Trials download it from MLflow, so workers on other nodes get it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sweep import tracking
from sweep.config import SweepConfig, judge_config
from trainer.config import flatten

CACHE = Path(tempfile.gettempdir()) / "sweep-judges"  # per-node download cache, by judge run id


def ensure_judge(cfg: SweepConfig, uri: str, artifact_root: str | None) -> str | None:
    """The MLflow run id holding the sweep's judge (trained now if missing); None without a judge."""
    if cfg.judge is None or not cfg.trainer.eval.enabled:
        return None
    from trainer.judge import train_judge

    jc = judge_config(cfg)
    key = jc.key()
    device = "cpu" if cfg.resources.gpus == 0 else cfg.trainer.device
    mc = tracking.client(uri)
    run_id = tracking.find_judge(mc, key)
    if run_id:
        print(f"judge {key}: found in MLflow (experiment {tracking.JUDGES_EXPERIMENT}, run {run_id})", flush=True)
        return run_id
    print(f"judge {key}: not in MLflow yet, training it once ({jc.arch}, {jc.epochs} epochs) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="sweep-judge-") as tmp:  # MLflow is the judge's home
        path = train_judge(jc, tmp, device=device)
        run_id = tracking.log_judge(mc, artifact_root, key, flatten(jc), Path(path))
    print(f"judge {key}: stored in MLflow (experiment {tracking.JUDGES_EXPERIMENT}, run {run_id})", flush=True)
    return run_id


def fetch_judge(uri: str, run_id: str) -> Path:
    """The judge's local path on this node, downloaded from MLflow once per node."""
    target = CACHE / run_id / "judge.pt"
    if target.is_file():
        return target
    # Download beside the target and rename: concurrent trials on a node never see half a file.
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dl-", dir=CACHE))
    local = tracking.download(tracking.client(uri), run_id, "judge.pt", staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(local, target)
    return target
