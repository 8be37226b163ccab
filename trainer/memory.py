"""An estimate of one training run's peak GPU memory, computed without a GPU before one is rented.

A sweep packs several trials onto one GPU (``resources.gpus`` below 1); this estimate lets the
sweep refuse a packing whose trials cannot fit the GPU's memory before anything starts. It is an
ESTIMATE, built from parts that can be counted exactly on the CPU plus stated margins for what
cannot; ``python -m trainer.bench --throughput 1`` on a GPU prints it beside the measured peak
(docs/performance-gpu.md).

The parts, in bytes:

- ``data``: the whole dataset lives on the training device as float32 images and int64 labels
  (trainer.data), counted from the dataset's shape and split sizes, without loading it.
- ``model``: parameters and buffers, one gradient per parameter, and SGD's momentum buffer.
- ``train_activations``: the tensors autograd keeps for the backward pass of one training step of
  ``cfg.loss`` at ``cfg.batch_size`` (for the double-backward losses this includes the graph of
  the input gradient), plus two of the largest such tensors for the gradients in flight during the
  backward pass. They are counted with ``torch.autograd.graph.saved_tensors_hooks`` over one
  step at two small probe batches (each storage once, parameters excluded), and extrapolated
  along the line through them: these tensors grow linearly with the batch. The probes run on
  PyTorch's meta device, which computes shapes only (no arithmetic), so they take a fraction of
  a second; the tests check that the CPU saves exactly the same bytes.
- ``eval_activations``: the same for one eval-mode input gradient at the evaluation's batch
  (trainer.evaluation.BATCH_SIZE images), when ``eval.enabled``; the evaluations run between
  epochs, so the peak takes the larger of the two phases, not their sum.

``peak_bytes`` (comparable to ``torch.cuda.max_memory_allocated``) is data + model + the larger
phase. ``footprint_bytes`` is what a trial occupies on the card: the peak times
(1 + ALLOCATOR_MARGIN) for the caching allocator's rounding and fragmentation and cuDNN's
workspaces (not seen on the CPU), plus CUDA_CONTEXT_BYTES for the process's CUDA context and
kernels, which ``max_memory_allocated`` does not count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import DataConfig, TrainConfig
from trainer.data import DEFAULT_TEST_SIZE, DEFAULT_TRAIN_SIZE, DIGITS_TEST_SIZE, SYNTHETIC_SIZES
from trainer.losses import compute_loss, input_gradient, true_logit
from trainer.models import build_model

GIB = 2**30
# Margins for what the CPU cannot see (docs/performance-gpu.md compares them with a GPU's figures):
ALLOCATOR_MARGIN = 0.25  # fraction of the peak: allocator rounding/fragmentation, cuDNN workspaces
CUDA_CONTEXT_BYTES = GIB // 2  # per process: CUDA context, cuBLAS/cuDNN handles and kernels
PROBE_BATCHES = (2, 4)  # images per probe step (2: BatchNorm needs more than one value per channel)
BYTES_PER_LABEL = 8  # int64

# (training images, test images, channels, pixels per side, classes) of the fixed datasets.
_CIFAR = (50_000, 10_000, 3, 32)
_DIGITS = (1797 - DIGITS_TEST_SIZE, DIGITS_TEST_SIZE, 1, 8)


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated GPU memory of one training run, in bytes, by part (see the module docstring)."""

    data: int
    model: int
    train_activations: int
    eval_activations: int
    batch_size: int

    @property
    def peak_bytes(self) -> int:
        """Estimated ``torch.cuda.max_memory_allocated`` of the run."""
        return self.data + self.model + max(self.train_activations, self.eval_activations)

    @property
    def footprint_bytes(self) -> int:
        """Estimated memory the run's process occupies on the card (allocator margin, CUDA context)."""
        return math.ceil(self.peak_bytes * (1 + ALLOCATOR_MARGIN)) + CUDA_CONTEXT_BYTES

    def describe(self) -> str:
        """One line: the footprint and its parts in GiB."""
        return (
            f"{self.footprint_bytes / GIB:.2f} GiB per trial (peak allocated {self.peak_bytes / GIB:.2f}: "
            f"data {self.data / GIB:.2f}, model {self.model / GIB:.2f}, training step at batch "
            f"{self.batch_size} {self.train_activations / GIB:.2f}, evaluation {self.eval_activations / GIB:.2f}; "
            f"+{ALLOCATOR_MARGIN:.0%} allocator margin, +{CUDA_CONTEXT_BYTES / GIB:.1f} CUDA context)"
        )


def dataset_shape(data: DataConfig) -> tuple[int, int, int, int, int]:
    """(training-pool images, test images, channels, pixels per side, classes) of ``data``, after
    ``train_size`` / ``test_size``, without loading it. The validation split is carved from the
    training pool, so the pool's size is what sits on the device."""
    if data.dataset in ("cifar10", "cifar100"):
        train, test, channels, size = _CIFAR
        classes = 10 if data.dataset == "cifar10" else 100
    elif data.dataset == "digits":
        (train, test, channels, size), classes = _DIGITS, 10
    else:  # synthetic, gaussians: generated with the configured shape
        sizes = SYNTHETIC_SIZES if data.dataset == "synthetic" else (DEFAULT_TRAIN_SIZE, DEFAULT_TEST_SIZE)
        train, test = data.train_size or sizes[0], data.test_size or sizes[1]
        channels, size, classes = data.channels, data.image_size, data.num_classes
    train = min(train, data.train_size or train)
    test = min(test, data.test_size or test)
    return train, test, channels, size, classes


def image_bytes(data: DataConfig) -> int:
    """Bytes of one float32 image of ``data`` (a generated sample is one too)."""
    _, _, channels, size, _ = dataset_shape(data)
    return channels * size * size * 4


def data_bytes(data: DataConfig) -> int:
    """Bytes of the dataset's tensors on the device: float32 images and int64 labels."""
    train, test, channels, size, _ = dataset_shape(data)
    return (train + test) * (channels * size * size * 4 + BYTES_PER_LABEL)


def model_bytes(model: nn.Module, momentum: bool) -> int:
    """Parameters and buffers, a gradient per trainable parameter, SGD's momentum buffer if any."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params + buffers + trainable * (2 if momentum else 1)


def saved_tensor_bytes(model: nn.Module, step) -> tuple[int, int]:
    """(total, largest) bytes of the tensors autograd saves while ``step()`` runs, each storage
    once, the model's parameters and buffers excluded (they are counted with the model)."""
    params = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        # _cdata identifies the storage itself (the graph keeps it alive while we count), so
        # views of one tensor and tensors saved by several operations count once.
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(saved.values()), max(saved.values(), default=0)


def memory_key(cfg: TrainConfig) -> str:
    """What of ``cfg`` the estimate depends on, as a string: configs with equal keys have equal
    estimates (the loss weights, learning rate and seeds do not matter)."""
    loss = cfg.loss
    parts = [
        cfg.data.model_dump(mode="json"),
        cfg.model.model_dump(mode="json"),
        [loss.kind, loss.estimator, loss.forward, loss.grad_norm_method, loss.stability, loss.samples],
        cfg.batch_size,
        cfg.optim.momentum > 0,
        [cfg.eval.enabled, cfg.eval.samples, cfg.eval.perturbation_images],
    ]
    return repr(parts)


def _line(points: list[tuple[int, int]], batch: int) -> int:
    """The value at ``batch`` of the line through two (batch, bytes) probes, never below zero."""
    (b1, v1), (b2, v2) = points
    slope = (v2 - v1) / (b2 - b1)
    return max(0, round(v1 + slope * (batch - b1)))


def _model(cfg: TrainConfig, device: str) -> nn.Module:
    """The run's model, created on ``device`` (meta: no memory, so any width can be counted)."""
    _, _, channels, size, classes = dataset_shape(cfg.data)
    with torch.device(device):
        return build_model(cfg.model.arch, classes, channels, cfg.model.width, cfg.model.beta, size)


def resident_bytes(cfg: TrainConfig) -> int:
    """A lower bound of the run's memory in bytes, in milliseconds: the dataset and the model's
    parameters, gradients and momentum (no activations). A trial whose bound exceeds a node's
    memory cannot run there on any device."""
    return data_bytes(cfg.data) + model_bytes(_model(cfg, "meta"), cfg.optim.momentum > 0)


def estimate_memory(cfg: TrainConfig, device: str = "meta") -> MemoryEstimate:
    """Estimate the GPU memory of ``trainer.run(cfg)`` from probe steps on ``device`` (meta: shapes
    only, fast; cpu: the same counts from real arithmetic, for tests)."""
    with torch.random.fork_rng(devices=[]):  # the caller's global random state stays as it was
        return _estimate(cfg, device)


def _estimate(cfg: TrainConfig, device: str) -> MemoryEstimate:
    _, test, channels, size, classes = dataset_shape(cfg.data)
    torch.manual_seed(0)
    model = _model(cfg, device)
    generator = torch.Generator().manual_seed(0)

    def probe(batch: int, train: bool) -> tuple[int, int]:
        x = torch.rand(batch, channels, size, size, generator=generator).to(device)
        y = torch.randint(classes, (batch,), generator=generator).to(device)
        model.train(train)
        if train:
            # The noise's generator must live on the probe's device; meta draws no numbers.
            noise = generator if device == "cpu" else None
            return saved_tensor_bytes(model, lambda: compute_loss(model, x, y, cfg.loss, generator=noise))

        def eval_step() -> None:  # trainer.evaluation.input_gradient: the evaluations' costliest pass
            xr = x.requires_grad_(True)
            input_gradient(true_logit(model, xr, y)[1], xr)

        return saved_tensor_bytes(model, eval_step)

    train_probes = [probe(b, True) for b in PROBE_BATCHES]
    # The saved tensors, plus two of the largest for the activation gradients in flight.
    train_act = _line([(b, s + 2 * m) for b, (s, m) in zip(PROBE_BATCHES, train_probes)], cfg.batch_size)
    eval_act = 0
    if cfg.eval.enabled:
        from trainer.evaluation import BATCH_SIZE  # matplotlib loads only when evaluations run

        eval_batch = min(BATCH_SIZE, max(cfg.eval.samples, min(cfg.eval.perturbation_images, test)))
        eval_probes = [probe(b, False) for b in PROBE_BATCHES]
        eval_act = _line([(b, s + 2 * m) for b, (s, m) in zip(PROBE_BATCHES, eval_probes)], eval_batch)
    return MemoryEstimate(
        data=data_bytes(cfg.data),
        model=model_bytes(model, cfg.optim.momentum > 0),
        train_activations=train_act,
        eval_activations=eval_act,
        batch_size=cfg.batch_size,
    )
