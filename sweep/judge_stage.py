"""The judge stage: one GAN-test judge per dataset and judge config, stored in MLflow.

Before any trial starts the driver looks for a finished run tagged ``judge.key = <key>`` in the
MLflow experiment ``judges``; if there is none it trains the judge once and logs it there as
artifact ``judge.pt``. Trials download it from MLflow, so workers on other nodes get it too.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from sweep import ctrlc, seams, tracking
from sweep.config import SweepConfig, judge_config
from sweep.record import JUDGE_FILE, JUDGES_EXPERIMENT
from trainer import keys
from trainer.config import flatten
from trainer.judge import JudgeConfig

CACHE = Path(tempfile.gettempdir()) / "sweep-judges"  # per-node download cache, by judge run id


class EpochPrinter:
    """The judge's progress: ``judge: epoch 3/100, train acc 0.812, 4.1 s/epoch, ETA ~6 min 40 s``
    (at most one line every ``every`` seconds, and always the last epoch)."""

    def __init__(self, epochs: int, every: float = 5.0) -> None:
        self.epochs, self.every = epochs, every
        self.started = time.time()
        self.printed = 0.0

    def __call__(self, metrics: dict[str, Any], files: dict[str, str]) -> None:
        ctrlc.check()  # a Ctrl-C Python dropped (raised inside a finalizer) stops here
        epoch = int(metrics[keys.EPOCH])
        now = time.time()
        if epoch < self.epochs and now - self.printed < self.every:
            return
        self.printed = now
        per_epoch = (now - self.started) / epoch
        eta = round(per_epoch * (self.epochs - epoch))
        acc = metrics.get(keys.TRAIN_ACC)
        print(
            f"judge: epoch {epoch}/{self.epochs}" + (f", train acc {acc:.3f}" if isinstance(acc, float) else "")
            + f", {per_epoch:.1f} s/epoch" + (f", ETA ~{eta // 60} min {eta % 60:02d} s" if eta else ""),
            flush=True,
        )


def train_and_log(jc: JudgeConfig, uri: str, artifact_root: str | None, device: str) -> str:
    """Train the judge of ``jc`` and store it in MLflow; returns the judge's run id."""
    from trainer.judge import train_judge

    with tempfile.TemporaryDirectory(prefix="sweep-judge-") as tmp:  # MLflow is the judge's home
        path = train_judge(jc, tmp, device=device, report=EpochPrinter(jc.epochs))
        mc = tracking.client(uri)
        run_id = tracking.start_judge(mc, artifact_root, jc.key())
        seams.kill_point("judge")  # the judge's run exists, its weights are not logged yet
        tracking.store_judge(mc, run_id, jc.key(), flatten(jc), Path(path))
        return run_id


def ensure_judge(
    cfg: SweepConfig,
    uri: str,
    artifact_root: str | None,
    remote: Callable[[Callable[[], str]], str] | None = None,
) -> str | None:
    """The MLflow run id holding the sweep's judge (trained now if missing); None without a judge.

    With ``remote`` (a runner of ``fn() -> str`` as a Ray task with a trial's resources, used when
    trials get GPUs) the judge trains on a worker instead of on the driver, which is often a
    CPU-only head node.
    """
    if cfg.judge is None or not cfg.trainer.eval.enabled:
        return None
    jc = judge_config(cfg)
    if "://" not in jc.data.data_dir:  # Ray trials run in their own folders
        jc.data.data_dir = str(Path(jc.data.data_dir).resolve())
    key = jc.key()
    run_id = tracking.find_judge(tracking.client(uri), key)
    if run_id:
        print(f"judge {key}: found in MLflow (experiment {JUDGES_EXPERIMENT}, run {run_id})", flush=True)
        return run_id
    where = "in a Ray task" if remote else "here"
    print(f"judge {key}: not in MLflow yet, training it once {where} ({jc.arch}, {jc.epochs} epochs) ...", flush=True)
    if remote is None:
        run_id = train_and_log(jc, uri, artifact_root, "cpu" if cfg.resources.gpus == 0 else cfg.trainer.device)
    else:
        run_id = remote(functools.partial(train_and_log, jc, uri, artifact_root, cfg.trainer.device))
    print(f"judge {key}: stored in MLflow (experiment {JUDGES_EXPERIMENT}, run {run_id})", flush=True)
    return run_id


def fetch_judge(uri: str, run_id: str) -> Path:
    """The judge's local path on this node, downloaded from MLflow once per node."""
    target = CACHE / run_id / JUDGE_FILE
    if target.is_file():
        return target
    # Download beside the target and rename: concurrent trials on a node never see half a file.
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dl-", dir=CACHE))
    local = tracking.download(tracking.client(uri), run_id, JUDGE_FILE, staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(local, target)
    return target
