"""The judge stage: one GAN-test judge per dataset and judge config, stored in MLflow.

Before any trial starts the driver looks for a finished run tagged ``judge.key = <key>`` in the
MLflow experiment ``judges``; if there is none it trains the judge once and logs it there as
artifact ``judge.pt``, tagged with its sha256. Trials download it from MLflow, so workers on
other nodes get it too.

A judge whose weights cannot be fetched or do not match their checksum (deleted or overwritten in
the store) is a cache miss: its run is marked FAILED and the judge is trained again, once. Two
sweeps on one machine that need the same judge train it once: the second waits for the first
(a lock per judge key in the node's temp folder).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from sweep import judge_runs, kill_points, stopping, tracking
from sweep.config import SweepConfig, judge_config
from sweep.record import JUDGE_FILE, JUDGES_EXPERIMENT
from trainer import keys
from trainer.config import flatten
from trainer.judge import JudgeConfig

CACHE = Path(tempfile.gettempdir()) / "sweep-judges"  # per-node download cache, by judge run id


class EpochPrinter:
    """The judge's progress: ``judge: epoch 3/100, train acc 0.812, 4.1 s/epoch measured, ETA ~6 min 40 s``
    (at most one line every ``every`` seconds, and always the first and the last epoch).

    The time per epoch is measured: between the first epoch's result and the latest one; after the
    first epoch alone, the trainer's own time of that epoch's steps (``time/epoch_s``), so that the
    loading of the data and the model's start-up are not taken for an epoch's cost."""

    def __init__(self, epochs: int, every: float = 5.0) -> None:
        self.epochs, self.every = epochs, every
        self.started = time.time()
        self.printed = 0.0
        self.first: tuple[int, float] | None = None  # the first epoch reported, and when

    def __call__(self, metrics: dict[str, Any], files: dict[str, str]) -> None:
        stopping.check()  # a Ctrl-C Python dropped (raised inside a finalizer) stops here
        epoch = int(metrics[keys.EPOCH])
        now = time.time()
        if self.first is None:
            self.first = (epoch, now)
        elif epoch < self.epochs and now - self.printed < self.every:
            return
        self.printed = now
        if epoch > self.first[0]:
            per_epoch = (now - self.first[1]) / (epoch - self.first[0])
        else:
            measured = metrics.get(keys.EPOCH_SECONDS)
            per_epoch = float(measured) if isinstance(measured, (int, float)) else (now - self.started) / epoch
        eta = round(per_epoch * (self.epochs - epoch))
        acc = metrics.get(keys.TRAIN_ACC)
        print(
            f"judge: epoch {epoch}/{self.epochs}" + (f", train acc {acc:.3f}" if isinstance(acc, float) else "")
            + f", {per_epoch:.1f} s/epoch measured" + (f", ETA ~{eta // 60} min {eta % 60:02d} s" if eta else ""),
            flush=True,
        )


TIMED_STEPS = 3  # training steps timed (after one warm-up step) to estimate the judge's cost


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"


def step_seconds(jc: JudgeConfig, device: str) -> tuple[float, int, str]:
    """Seconds per training step of the judge on ``device`` (median of TIMED_STEPS timed SGD
    steps on a batch of its training images, after a warm-up step), its training images, and the
    device it resolved to."""
    import torch
    import torch.nn.functional as F

    from trainer.data import load_dataset
    from trainer.models import build_model
    from trainer.train import resolve_device

    dev = resolve_device(device)
    data = load_dataset(jc.data, "cpu")
    model = build_model(jc.arch, data.num_classes, data.in_channels, jc.width, jc.beta, data.image_size).to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=jc.lr, momentum=0.9)
    x, y = data.train_x[: jc.batch_size].to(dev), data.train_y[: jc.batch_size].to(dev)
    times = []
    for _ in range(TIMED_STEPS + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[TIMED_STEPS // 2], len(data.train_x), str(dev)


SMALLEST_HINTED_WIDTH = 0.0625  # --smoke's judge width: the plan suggests no narrower judge


def shrink_hints(jc: JudgeConfig) -> list[str]:
    """``--set`` flags that make the judge smaller than ``jc``, never larger: fewer epochs, half
    the width (down to SMALLEST_HINTED_WIDTH)."""
    hints = [f"--set judge.epochs=N (N < {jc.epochs})"] if jc.epochs > 1 else []
    if jc.width > SMALLEST_HINTED_WIDTH:
        hints.append(f"--set judge.width={max(jc.width / 2, SMALLEST_HINTED_WIDTH):g}")
    return hints


def plan(jc: JudgeConfig, device: str) -> str:
    """What training the judge will take, printed before it starts: architecture, epochs, a rough
    guess of the time on ``device`` (from :func:`step_seconds`, said to be one: the epochs' measured
    time follows in the progress lines) and how to shrink it."""
    per_step, images, device = step_seconds(jc, device)
    per_epoch = math.ceil(images / jc.batch_size)
    steps = per_epoch * jc.epochs
    hints = shrink_hints(jc)
    return (
        f"judge plan: {jc.arch} (width {jc.width:g}), {jc.epochs} epochs of {images} {jc.data.dataset} images "
        f"at batch {jc.batch_size} on {device} ({per_epoch} step(s) per epoch, {steps} in all): a rough guess of "
        f"about {_duration(per_step * steps)} from {TIMED_STEPS} timed steps ({per_step * 1000:.0f} ms each); "
        f"each epoch's measured time follows\n"
        f"judge plan: trained once per dataset and judge config, then reused; "
        + (f"shrink it with {' or '.join(hints)}" if hints else "it is as small as the hints go")
    )


def train_and_log(jc: JudgeConfig, uri: str, artifact_root: str | None, device: str, threads: int) -> str:
    """Print the judge's plan, train it and store it in MLflow; returns the judge's run id.

    ``threads``: torch threads while it trains, the trials' (``trial_threads``) wherever it trains
    (driver or Ray task). On CPU the weights depend on the thread count (the order of float sums):
    trained with 2 threads instead of 1, the quickstart's judge differed by up to 0.31 in a batch-norm
    running variance, and GAN-test by up to 5 of 256 samples; with a fixed count, the same key
    gives the same judge on any machine's CPU.
    """
    import torch

    from trainer.judge import train_judge

    print(plan(jc, device), flush=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="sweep-judge-") as tmp:  # MLflow is the judge's home
            path = train_judge(jc, tmp, device=device, report=EpochPrinter(jc.epochs))
            return _log(jc, uri, artifact_root, Path(path))
    finally:
        torch.set_num_threads(previous)  # the driver's own setting, when it trained here


def _log(jc: JudgeConfig, uri: str, artifact_root: str | None, path: Path) -> str:
    mc = tracking.client(uri)
    run_id = judge_runs.start_judge(mc, artifact_root, jc.key())
    kill_points.kill_point("judge")  # the judge's run exists, its weights are not logged yet
    judge_runs.store_judge(mc, run_id, jc.key(), flatten(jc), path)
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
    mc = tracking.client(uri)
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(CACHE / f"judge-{key}.lock"):  # another sweep training this judge: wait, then find it
        while run_id := judge_runs.find_judge(mc, key):
            problem = verify_judge(uri, run_id)
            if problem is None:
                print(f"judge {key}: found in MLflow (experiment {JUDGES_EXPERIMENT}, run {run_id})", flush=True)
                return run_id
            print(f"judge {key}: run {run_id} is unusable ({problem}); marking it failed and training the judge "
                  "again", flush=True)  # fmt: skip
            judge_runs.retire_judge(mc, run_id, problem)
        where = "in a Ray task" if remote else "here"
        print(f"judge {key}: not in MLflow yet, training it once {where} ({jc.arch}, {jc.epochs} epochs) ...",
              flush=True)  # fmt: skip
        if remote is None:
            device = "cpu" if cfg.resources.gpus == 0 else cfg.trainer.device
            run_id = train_and_log(jc, uri, artifact_root, device, cfg.trial_threads)
        else:
            run_id = remote(functools.partial(train_and_log, jc, uri, artifact_root, cfg.trainer.device, cfg.trial_threads))
    print(f"judge {key}: stored in MLflow (experiment {JUDGES_EXPERIMENT}, run {run_id})", flush=True)
    return run_id


class JudgeUnusable(RuntimeError):
    """A judge run's weights cannot be fetched, or differ from the checksum logged with them."""


def verify_judge(uri: str, run_id: str) -> str | None:
    """Why the judge of ``run_id`` cannot be used (fetched into this node's cache and checked), or None."""
    from trainer.checkpoint import read_judge

    try:
        path = fetch_judge(uri, run_id)
        read_judge(path)  # judges logged before the checksum tag: at least a readable judge file
    except Exception as e:  # noqa: BLE001 - any failure to fetch or read makes it a cache miss
        return str(e) if isinstance(e, JudgeUnusable) else f"{type(e).__name__}: {e}"
    return None


def fetch_judge(uri: str, run_id: str) -> Path:
    """The judge's local path on this node, downloaded from MLflow once per node and checked
    against the sha256 its run was tagged with; raises JudgeUnusable when it cannot be."""
    mc = tracking.client(uri)
    expected = judge_runs.judge_checksum(mc, run_id)
    target = CACHE / run_id / JUDGE_FILE
    if target.is_file() and (expected is None or judge_runs.sha256(target) == expected):
        return target
    # Download beside the target and rename: concurrent trials on a node never see half a file.
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dl-", dir=CACHE))
    try:
        try:
            local = tracking.download(mc, run_id, JUDGE_FILE, staging)
        except Exception as e:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            raise JudgeUnusable(f"cannot fetch its {JUDGE_FILE}: {type(e).__name__}: {e}") from e
        if expected is not None and judge_runs.sha256(local) != expected:
            raise JudgeUnusable(f"its {JUDGE_FILE} differs from the one logged when it was trained (sha256)")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no empty dl-* folder left behind
    return target
