"""The training loop: ``run(cfg, report=...)`` trains one model and returns its final metrics.

It reads top to bottom: build data, model and optimizer (or resume them from
``checkpoint_dir/last.pt``), then per epoch ``train_one_epoch``, ``measure`` on the validation
split (``val/*``, when there is one) and on the test set (``test/*``), the paper's evaluations
(trainer.evaluation) at the configured cadence, an atomic checkpoint (trainer.checkpoint), and
``report``. The validation metrics are the ones to select by; the test metrics are reported only. A
NaN/Inf loss ends the run as ``diverged`` instead of raising. Everything random comes from seeded
generators whose states are checkpointed, so a resumed run ends with the same weights as an
uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import keys, stats
from trainer.checkpoint import CHECKPOINT, load_checkpoint, load_judge, save_checkpoint
from trainer.config import ConfigError, TrainConfig, flatten, load_config
from trainer.data import Dataset, load_dataset, train_batches
from trainer.losses import compute_loss, precision
from trainer.models import build_model

Report = Callable[[dict, dict], None]
# Config sections that may change between a run and its resumption: where and how fast it runs
# and what is evaluated, not what is trained.
RESUMABLE_CHANGES = ("device", "eval.", "channels_last", "cudnn_benchmark")
EVAL_BATCH = 512  # images per forward pass in `measure`

# compute_loss part -> metric key (batch means, averaged over the epoch's images).
PART_KEYS = {
    "total": keys.TRAIN_LOSS,
    "ce": keys.TRAIN_CE,
    "trace": keys.TRAIN_TRACE,
    "grad_norm": keys.TRAIN_GRAD_NORM,
    "stability": keys.TRAIN_STABILITY,
}


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; other names are checked for availability."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device name (auto, cpu, cuda[:N], mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {name!r} requested but MPS is not available")
    return device


def channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the NHWC layout applies: on CUDA only. It buys nothing on CPU, and there torch
    2.14.1's channels_last backward corrupted the heap (abort) on a width-1/16 ResNet-9."""
    return cfg.channels_last and device.type == "cuda"


def _sync(device: torch.device) -> None:
    # CUDA runs asynchronously: wait for it before reading a clock.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(
    model: nn.Module,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    generators: dict[str, torch.Generator],
) -> dict[str, float]:
    """One pass over the shuffled, augmented training set; returns the epoch's train metrics."""
    model.train()
    device = data.train_x.device
    sums = torch.zeros(len(PART_KEYS) + 1, device=device)  # loss parts, then correct predictions
    seen = 0
    _sync(device)
    start = time.perf_counter()
    memory_format = torch.channels_last if channels_last(cfg, device) else torch.contiguous_format
    for x, y in train_batches(data, cfg.batch_size, generators["data"], cfg.data):
        x = x.contiguous(memory_format=memory_format)
        with precision(cfg.loss, device):  # the backward pass too, for finite differences
            out = compute_loss(model, x, y, cfg.loss, generator=generators["noise"])
            optimizer.zero_grad(set_to_none=True)
            out["total"].backward()
        optimizer.step()
        # Bookkeeping on the device, no host synchronisation per step: one stack, one add.
        correct = out["logits"].argmax(1) == y
        sums += torch.stack([*(out[p].detach() * len(y) for p in PART_KEYS), correct.sum()]).float()
        seen += len(y)
    _sync(device)
    seconds = time.perf_counter() - start
    values = (sums / max(seen, 1)).tolist()  # one device sync per epoch
    metrics = dict(zip(PART_KEYS.values(), values))
    metrics[keys.TRAIN_ACC] = values[-1]
    metrics[keys.EPOCH_SECONDS] = seconds
    metrics[keys.IMAGES_PER_SECOND] = seen / seconds if seconds > 0 else 0.0
    return metrics


@torch.no_grad()
def outcomes(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, float]:
    """Per-image correctness (bool, on the model's device) and the summed cross-entropy (nats) on
    clean images, in eval mode."""
    model.eval()
    loss, correct = 0.0, []
    for start in range(0, len(labels), EVAL_BATCH):
        x, y = images[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct.append(logits.argmax(1) == y)
    return (torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)), loss


def measure(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[float, float]:
    """(accuracy in [0, 1], mean cross-entropy in nats) on clean images, in eval mode."""
    correct, loss = outcomes(model, images, labels)
    n = max(len(labels), 1)
    return correct.sum().item() / n, loss / n


def split_metrics(model: nn.Module, data: Dataset, items: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Accuracy and loss on the validation split (val/acc, val/loss; none without one) and the test
    set, each accuracy with its 95 % Wilson interval over the split's images (``val/acc_lo``, ...).
    ``items``, when given, receives each split's per-image correctness under its accuracy key (for
    paired comparisons: trainer.compare)."""
    metrics = {}
    splits = [(keys.TEST_ACC, keys.TEST_LOSS, data.test_x, data.test_y)]
    if data.val_y is not None:
        splits.insert(0, (keys.VAL_ACC, keys.VAL_LOSS, data.val_x, data.val_y))
    for acc_key, loss_key, x, y in splits:
        correct, loss = outcomes(model, x, y)
        n = max(len(y), 1)
        metrics[acc_key], metrics[loss_key] = correct.sum().item() / n, loss / n
        interval = stats.proportion(metrics[acc_key], len(y))
        metrics[keys.lo_key(acc_key)], metrics[keys.hi_key(acc_key)] = interval.lo, interval.hi
        if items is not None:
            items[acc_key] = correct
    return metrics


def _diverged(metrics: Mapping[str, float], model: nn.Module) -> bool:
    return not math.isfinite(metrics[keys.TRAIN_LOSS]) or not all(
        torch.isfinite(p).all() for p in model.parameters()
    )


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **{name: g.get_state() for name, g in generators.items()},
    }


def _set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state[name])


def _check_resumable(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    old = flatten(saved)
    new = flatten(cfg.model_dump(mode="json"))
    changed = sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES)
    )
    if changed:
        raise ConfigError(
            f"{', '.join(changed)}: differ from the checkpoint {str(path)!r} being resumed; "
            "use a new output/checkpoint directory for a different config"
        )


def _is_eval_epoch(cfg: TrainConfig, epoch: int) -> bool:
    every = cfg.eval.every
    return cfg.eval.enabled and (epoch == cfg.epochs or (every > 0 and epoch % every == 0))


@dataclass
class Training:
    """Everything that changes while training, and that a checkpoint saves and restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generators: dict[str, torch.Generator]  # "data": order, crops, flips (CPU); "noise": trace noise

    @classmethod
    def build(cls, cfg: TrainConfig, data: Dataset, device: torch.device) -> Training:
        """Fresh seeded model, SGD with momentum and MultiStepLR at the milestone fractions."""
        torch.manual_seed(cfg.seed)  # weight initialization
        model = build_model(
            cfg.model.arch, data.num_classes, data.in_channels, cfg.model.width, cfg.model.beta, data.image_size
        )
        model = model.to(device)
        if channels_last(cfg, device):  # NHWC weights and activations (batches follow)
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
            nesterov=cfg.optim.nesterov,
        )
        milestones = [max(1, round(f * cfg.epochs)) for f in cfg.optim.milestones]  # in epochs
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.optim.gamma)
        generators = {
            "data": torch.Generator().manual_seed(cfg.seed),
            "noise": torch.Generator(device).manual_seed(cfg.seed + 1),
        }
        return cls(model, optimizer, scheduler, generators)

    def checkpoint(self, cfg: TrainConfig, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint contents after ``epoch``: tensors and plain containers only."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(self.generators),
            "epoch": epoch,
            "config": cfg.model_dump(mode="json"),
            "metrics": metrics,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`checkpoint`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], self.generators)


def run(
    cfg: TrainConfig | Mapping[str, Any],
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train one model as ``cfg`` says; return the last epoch's metrics (``status`` included).

    ``report(metrics, files)`` is called after each epoch, once its checkpoint is on disk.
    With ``checkpoint_dir`` holding ``last.pt``, the run resumes from it. Evaluation images and
    curves go under ``out_dir/epoch_NNN`` (a temporary folder when ``out_dir`` is None).
    """
    cfg = load_config(cfg)
    device = resolve_device(cfg.device)
    saved_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark  # process-wide; restored on return
    try:
        return _run(cfg, device, report, checkpoint_dir, out_dir)
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark


def _run(
    cfg: TrainConfig,
    device: torch.device,
    report: Report | None,
    checkpoint_dir: str | Path | None,
    out_dir: str | Path | None,
) -> dict[str, Any]:
    """The body of :func:`run`, with the config resolved and cudnn.benchmark set."""
    data = load_dataset(cfg.data, device)
    training = Training.build(cfg, data, device)
    model, optimizer = training.model, training.optimizer

    # Statuses are stored as plain str (.value): checkpoints are read with weights_only=True.
    start_epoch, metrics = 0, {keys.STATUS: keys.Status.RUNNING.value}
    path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if path is not None and path.is_file():
        state = load_checkpoint(path)
        _check_resumable(state["config"], cfg, path)
        training.restore(state)
        start_epoch, metrics = state["epoch"], state["metrics"]

    judge = load_judge(cfg.eval.judge, device) if cfg.eval.enabled and cfg.eval.judge else None
    eval_root = Path(out_dir) if out_dir is not None else None

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        train_metrics = train_one_epoch(model, data, optimizer, cfg, training.generators)
        training.scheduler.step()
        if _diverged(train_metrics, model):
            metrics = {**train_metrics, keys.LR: lr, keys.EPOCH: epoch, keys.STATUS: keys.Status.DIVERGED.value}
            if report is not None:
                report(metrics, {})
            return metrics

        correct: dict[str, Tensor] = {}  # per-image outcomes, kept with an evaluation
        metrics = {**train_metrics, keys.LR: lr, **split_metrics(model, data, correct)}
        files: dict[str, str] = {}
        if _is_eval_epoch(cfg, epoch):
            from trainer.evaluation import evaluate_all  # matplotlib and friends load only when used

            if eval_root is None:
                eval_root = Path(tempfile.mkdtemp(prefix="trainer-eval-"))
            eval_metrics, files = evaluate_all(
                model,
                data,
                cfg.eval,
                judge=judge,
                out_dir=eval_root / f"epoch_{epoch:03d}",
                seed=cfg.seed,
                loss=cfg.loss,
                items=correct,
            )
            metrics.update(eval_metrics)
        metrics[keys.EPOCH] = epoch
        metrics[keys.STATUS] = (keys.Status.FINISHED if epoch == cfg.epochs else keys.Status.RUNNING).value

        if path is not None:
            save_checkpoint(path, training.checkpoint(cfg, epoch, metrics))
        if report is not None:
            report(metrics, files)
    return metrics
